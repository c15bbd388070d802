//! The request body the HTTP/2 path sends upstream: what was read ahead of picking an upstream
//! (small bodies whole, as NGINX's `proxy_request_buffering`, so a client that never finishes a
//! body never holds an upstream connection), then the rest of the client's stream, if any.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::HeaderMap;
use http_body_util::BodyExt;
use hyper::body::{Body, Frame, Incoming, SizeHint};

/// A request body: bytes read ahead, trailers if the body ended with them, then the rest.
#[derive(Default)]
pub struct UpBody {
    ahead: Option<Bytes>,
    trailers: Option<HeaderMap>,
    rest: Option<Incoming>,
}

/// Why reading ahead stopped short.
#[derive(Debug, PartialEq, Eq)]
pub enum AheadError {
    /// The client reset the stream or went away.
    Gone,
    /// No frame for `timeouts.idle` (408).
    Stalled,
}

impl UpBody {
    /// No body at all.
    pub fn empty() -> UpBody {
        UpBody::default()
    }

    /// Reads `body` until it ends or `limit` bytes are in hand; each frame must come within `idle`.
    pub async fn read_ahead(
        mut body: Incoming,
        limit: usize,
        idle: Duration,
    ) -> Result<UpBody, AheadError> {
        if body.is_end_stream() {
            return Ok(UpBody::empty());
        }
        let mut data = BytesMut::new();
        loop {
            let frame = match tokio::time::timeout(idle, body.frame()).await {
                Err(_) => return Err(AheadError::Stalled),
                Ok(None) => break,
                Ok(Some(Err(_))) => return Err(AheadError::Gone),
                Ok(Some(Ok(f))) => f,
            };
            match frame.into_data() {
                Ok(d) => data.extend_from_slice(&d),
                Err(f) => {
                    // Trailers end the body.
                    let trailers = f.into_trailers().ok();
                    return Ok(UpBody {
                        ahead: Some(data.freeze()).filter(|d| !d.is_empty()),
                        trailers,
                        rest: None,
                    });
                }
            }
            if body.is_end_stream() {
                break;
            }
            if data.len() >= limit {
                return Ok(UpBody {
                    ahead: Some(data.freeze()),
                    trailers: None,
                    rest: Some(body),
                });
            }
        }
        Ok(UpBody {
            ahead: Some(data.freeze()).filter(|d| !d.is_empty()),
            trailers: None,
            rest: None,
        })
    }
}

impl Body for UpBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = &mut *self;
        if let Some(d) = this.ahead.take() {
            return Poll::Ready(Some(Ok(Frame::data(d))));
        }
        if let Some(rest) = this.rest.as_mut() {
            match Pin::new(rest).poll_frame(cx) {
                Poll::Ready(None) => this.rest = None,
                other => return other,
            }
        }
        Poll::Ready(this.trailers.take().map(|t| Ok(Frame::trailers(t))))
    }

    fn is_end_stream(&self) -> bool {
        self.ahead.is_none()
            && self.trailers.is_none()
            && self.rest.as_ref().is_none_or(Body::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        let ahead = self.ahead.as_ref().map_or(0, |d| d.len() as u64);
        match &self.rest {
            None => SizeHint::with_exact(ahead),
            Some(r) => {
                let h = r.size_hint();
                let mut s = SizeHint::new();
                s.set_lower(h.lower() + ahead);
                if let Some(u) = h.upper() {
                    s.set_upper(u + ahead);
                }
                s
            }
        }
    }
}
