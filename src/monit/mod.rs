//! `cohort monit`: the terminal dashboard. This file owns the terminal (raw mode, alternate
//! screen, and putting both back on exit, Ctrl-C, SIGTERM and panic) and the event loop that joins
//! keys, a 1 s refresh of the process list and history, and the selected process's log stream.
//! `state` holds what is shown and how keys change it; `view` draws it.

mod state;
mod view;

use crate::api::client::Client;
use crate::api::{ActionRequest, History, LogFiles, LogLine, ProcessInfo, Selector};
use crate::home::Home;
use anyhow::{bail, Context, Result};
use crossterm::event::{Event, EventStream};
use futures_util::StreamExt;
use ratatui::backend::CrosstermBackend;
use ratatui::Terminal;
use state::{Effect, State};
use std::io::IsTerminal;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::mpsc;

/// How often the process list and the selected process's history are refreshed.
const REFRESH: Duration = Duration::from_secs(1);
/// Past lines of each log file shown when a process is selected.
const BACKLOG_LINES: usize = 100;

/// What background requests report back to the event loop.
enum Update {
    Procs(Result<Vec<ProcessInfo>>),
    History(u32, Vec<History>),
    Backlog(u32, Vec<(bool, String)>),
    Log(u32, bool, String),
    Done(String),
}

/// Owns the terminal while monit runs; dropping it restores the terminal.
struct Screen {
    terminal: Terminal<CrosstermBackend<std::io::Stdout>>,
}

fn restore_terminal() {
    let _ = crossterm::terminal::disable_raw_mode();
    let _ = crossterm::execute!(
        std::io::stdout(),
        crossterm::terminal::LeaveAlternateScreen,
        crossterm::cursor::Show
    );
}

impl Screen {
    fn enter() -> Result<Screen> {
        // A panic anywhere must not leave the user's shell in raw mode on the alternate screen.
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            restore_terminal();
            previous(info);
        }));
        crossterm::terminal::enable_raw_mode().context("cannot put the terminal in raw mode")?;
        let screen = crossterm::execute!(
            std::io::stdout(),
            crossterm::terminal::EnterAlternateScreen,
            crossterm::cursor::Hide
        )
        .context("cannot switch to the alternate screen")
        .and_then(|()| {
            Terminal::new(CrosstermBackend::new(std::io::stdout()))
                .context("cannot set up the terminal")
        });
        match screen {
            Ok(terminal) => Ok(Screen { terminal }),
            Err(e) => {
                restore_terminal();
                Err(e)
            }
        }
    }
}

impl Drop for Screen {
    fn drop(&mut self) {
        restore_terminal();
    }
}

pub async fn run(home: Home) -> Result<()> {
    if !std::io::stdout().is_terminal() || !std::io::stdin().is_terminal() {
        bail!("monit needs a terminal (run it in an interactive shell; for scripts use cohort ls --json)");
    }
    let client = Arc::new(Client::connect_or_start(home).await?);
    let ping = client.ping().await?;
    let label = format!("daemon pid {} │ {}", ping.pid, ping.home);
    let mut term = signal(SignalKind::terminate()).context("watching SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("watching SIGINT")?;
    let mut hup = signal(SignalKind::hangup()).context("watching SIGHUP")?;

    let mut screen = Screen::enter()?;
    let (tx, mut rx) = mpsc::unbounded_channel::<Update>();
    let mut state = State::default();
    let mut events = EventStream::new();
    let mut tick = tokio::time::interval(REFRESH);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut log_task: Option<tokio::task::JoinHandle<()>> = None;
    // The first list arrives before the first frame so monit never opens on an empty table.
    fetch(&client, &tx, None);
    let mut fetching = true;
    let mut first = true;

    loop {
        if !first {
            screen
                .terminal
                .draw(|f| view::draw(f, &state, &label))
                .context("drawing the dashboard")?;
        }
        let mut effect = Effect::None;
        tokio::select! {
            ev = events.next() => match ev {
                Some(Ok(Event::Key(k))) => effect = state.on_key(k),
                Some(Ok(_)) => {} // resize and the rest: the next draw fits the new size
                Some(Err(e)) => return Err(e).context("reading the terminal"),
                None => break,
            },
            _ = tick.tick() => {
                if !fetching {
                    fetching = true;
                    fetch(&client, &tx, state.selected);
                }
            }
            Some(u) = rx.recv() => {
                let mut next = Some(u);
                // Apply everything that is waiting before drawing once (a chatty app must not
                // cost a frame per line).
                while let Some(u) = next {
                    if let Update::Procs(_) = u {
                        fetching = false;
                        first = false;
                    }
                    if let Some(id) = apply(&mut state, u) {
                        select(&client, &tx, &mut log_task, id);
                    }
                    next = rx.try_recv().ok();
                }
            }
            _ = term.recv() => break,
            _ = int.recv() => break,
            _ = hup.recv() => break,
        }
        match effect {
            Effect::None => {}
            Effect::Quit => break,
            Effect::Selected(id) => select(&client, &tx, &mut log_task, id),
            Effect::Act(action, id, label) => {
                state.message = format!("{} {label}…", action.as_str());
                let client = client.clone();
                let tx = tx.clone();
                tokio::spawn(async move {
                    let req = ActionRequest::new(action, Selector::Id(id));
                    let r: Result<Vec<ProcessInfo>> = client.post("/action", &req).await;
                    let msg = match r {
                        Ok(_) => format!("{} {label}: done", action.as_str()),
                        Err(e) => format!("{} {label} failed: {e:#}", action.as_str()),
                    };
                    let _ = tx.send(Update::Done(msg));
                });
            }
        }
    }
    if let Some(t) = log_task {
        t.abort();
    }
    drop(screen);
    Ok(())
}

/// Applies one update; returns a process to select when the selection changed by itself.
fn apply(state: &mut State, u: Update) -> Option<u32> {
    match u {
        Update::Procs(Ok(p)) => return state.set_procs(p),
        Update::Procs(Err(e)) => state.error = Some(format!("the daemon is not answering: {e:#}")),
        Update::History(id, h) => {
            if state.selected == Some(id) {
                state.history = h.into_iter().next();
            }
        }
        Update::Backlog(id, lines) => {
            if state.selected == Some(id) {
                // Lines that streamed in while the files were read come after the backlog.
                let live: Vec<_> = state.logs.drain(..).collect();
                for (err, text) in lines {
                    state.push_log(err, text);
                }
                for l in live {
                    state.push_log(l.err, l.text);
                }
            }
        }
        Update::Log(id, err, text) => {
            if state.selected == Some(id) {
                state.push_log(err, text);
            }
        }
        Update::Done(msg) => state.message = msg,
    }
    None
}

/// Fetches the process list and, when a process is selected, its history.
fn fetch(client: &Arc<Client>, tx: &mpsc::UnboundedSender<Update>, selected: Option<u32>) {
    let client = client.clone();
    let tx = tx.clone();
    tokio::spawn(async move {
        if let Some(id) = selected {
            if let Ok(h) = client
                .post::<_, Vec<History>>("/history", &Selector::Id(id))
                .await
            {
                let _ = tx.send(Update::History(id, h));
            }
        }
        let _ = tx.send(Update::Procs(client.get("/processes").await));
    });
}

/// A new selection: its history now, its log tail, then its new lines as they come.
fn select(
    client: &Arc<Client>,
    tx: &mpsc::UnboundedSender<Update>,
    log_task: &mut Option<tokio::task::JoinHandle<()>>,
    id: u32,
) {
    if let Some(t) = log_task.take() {
        t.abort();
    }
    let client = client.clone();
    let tx = tx.clone();
    *log_task = Some(tokio::spawn(async move {
        if let Ok(h) = client
            .post::<_, Vec<History>>("/history", &Selector::Id(id))
            .await
        {
            let _ = tx.send(Update::History(id, h));
        }
        // Subscribe first, then read the files, so no line falls between the two.
        let stream = client.stream("/logs/stream", &Selector::Id(id)).await;
        if let Ok(files) = client
            .post::<_, Vec<LogFiles>>("/logs/files", &Selector::Id(id))
            .await
        {
            let mut lines = Vec::new();
            for f in &files {
                for (err, path) in [(false, &f.out), (true, &f.err)] {
                    if err && f.err == f.out {
                        continue;
                    }
                    let path = path.clone();
                    let tail = tokio::task::spawn_blocking(move || {
                        crate::home::tail::tail_lines(Path::new(&path), BACKLOG_LINES)
                    })
                    .await
                    .unwrap_or_default();
                    lines.extend(tail.into_iter().map(|l| (err, l)));
                }
            }
            let _ = tx.send(Update::Backlog(id, lines));
        }
        let Ok(resp) = stream else {
            let _ = tx.send(Update::Done(
                "cannot follow the logs (the daemon refused the stream)".into(),
            ));
            return;
        };
        use http_body_util::BodyExt;
        let mut body = resp.into_body();
        let mut pending: Vec<u8> = Vec::new();
        while let Some(Ok(frame)) = body.frame().await {
            let Some(data) = frame.data_ref() else {
                continue;
            };
            pending.extend_from_slice(data);
            while let Some(nl) = pending.iter().position(|c| *c == b'\n') {
                let line: Vec<u8> = pending.drain(..=nl).collect();
                if let Ok(l) = serde_json::from_slice::<LogLine>(&line) {
                    let _ = tx.send(Update::Log(id, l.stream == "err", l.line));
                }
            }
        }
    }));
}
