//! The stable fuzz driver: mutates the seed corpus of each target (fuzz/corpus/<target>/) with a
//! simple mutator (bit flips, byte changes, inserts of interesting tokens, splices with other
//! seeds, truncation) and runs the target (`cohort::balancer::fuzz`), which panics when an
//! invariant breaks. COHORT_FUZZ_SECONDS (default 1) is the time per target; `scripts/fuzz N` runs
//! N seconds each in a release build. With nightly, `cargo fuzz run <target>` runs the same
//! functions under libFuzzer (fuzz/).

use std::time::{Duration, Instant};

use cohort::balancer::fuzz::TARGETS;

/// Tokens a parser cares about, inserted at random places.
const TOKENS: &[&[u8]] = &[
    b"\r\n",
    b"\n",
    b"\r",
    b"\r\n\r\n",
    b":",
    b" ",
    b"\t",
    b";",
    b",",
    b"0\r\n\r\n",
    b"0\r\n\n",
    b"Host: a\r\n",
    b"Content-Length: ",
    b"Transfer-Encoding: chunked\r\n",
    b"chunked",
    b"Connection: close, upgrade\r\n",
    b"Upgrade: websocket\r\n",
    b"Expect: 100-continue\r\n",
    b"HTTP/1.1 ",
    b"HTTP/1.0",
    b"HTTP/2.0",
    b"101",
    b"103",
    b"204",
    b"304",
    b"GET ",
    b"HEAD ",
    b"POST ",
    b"http://",
    b"ffffffffffffffff",
    b"18446744073709551616",
    b"\0",
    b"\x7f",
    b"\xff",
    b"=",
    b"\"",
    b"[",
    b"]",
    b"{",
    b"}",
    b"max_conns=",
    b"weight=",
    b"app:",
    b"listen",
];

/// xorshift64*: reproducible from the seed printed on failure.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next() % n as u64) as usize
        }
    }
}

fn mutate(rng: &mut Rng, input: &mut Vec<u8>, corpus: &[Vec<u8>]) {
    for _ in 0..=rng.below(4) {
        let at = rng.below(input.len() + 1);
        match rng.below(7) {
            0 if !input.is_empty() => {
                let i = rng.below(input.len());
                input[i] ^= 1 << rng.below(8);
            }
            1 if !input.is_empty() => {
                let i = rng.below(input.len());
                input[i] = rng.next() as u8;
            }
            2 => {
                let t = TOKENS[rng.below(TOKENS.len())];
                input.splice(at..at, t.iter().copied());
            }
            3 if !input.is_empty() => {
                let end = (at + 1 + rng.below(16)).min(input.len());
                input.drain(at.min(end)..end);
            }
            4 => {
                let other = &corpus[rng.below(corpus.len())];
                let from = rng.below(other.len() + 1);
                input.truncate(at);
                input.extend_from_slice(&other[from..]);
            }
            5 if !input.is_empty() => {
                // Repeat a slice (long lines, many headers).
                let end = (at + 1 + rng.below(32)).min(input.len());
                let piece = input[at.min(end)..end].to_vec();
                for _ in 0..rng.below(64) {
                    input.splice(at..at, piece.iter().copied());
                }
            }
            _ => input.truncate(at),
        }
    }
    input.truncate(64 * 1024);
}

fn corpus(target: &str) -> Vec<Vec<u8>> {
    let dir = format!("{}/fuzz/corpus/{target}", env!("CARGO_MANIFEST_DIR"));
    let mut seeds: Vec<Vec<u8>> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{dir}: {e}"))
        .filter_map(|e| std::fs::read(e.ok()?.path()).ok())
        .collect();
    seeds.sort();
    assert!(!seeds.is_empty(), "{dir}: no seeds");
    seeds
}

#[test]
fn fuzz_targets_hold_their_invariants() {
    let secs: f64 = std::env::var("COHORT_FUZZ_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1.0);
    let seed: u64 = std::env::var("COHORT_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
                | 1
        });
    // The targets panic on purpose when an invariant breaks: keep the report, not the backtrace noise.
    for (name, target) in TARGETS {
        let seeds = corpus(name);
        for s in &seeds {
            target(s);
        }
        let mut rng = Rng(seed ^ xor_name(name));
        let deadline = Instant::now() + Duration::from_secs_f64(secs);
        let mut execs = 0u64;
        let mut input = Vec::new();
        while Instant::now() < deadline {
            for _ in 0..256 {
                input.clear();
                input.extend_from_slice(&seeds[rng.below(seeds.len())]);
                mutate(&mut rng, &mut input, &seeds);
                let r = std::panic::catch_unwind(|| target(&input));
                if r.is_err() {
                    let path = std::env::temp_dir().join(format!("cohort-fuzz-{name}-crash"));
                    let _ = std::fs::write(&path, &input);
                    panic!(
                        "{name}: invariant broken (seed {seed}), input saved to {}: {:?}",
                        path.display(),
                        String::from_utf8_lossy(&input)
                    );
                }
                execs += 1;
            }
        }
        eprintln!("fuzz {name}: {execs} execs in {secs}s, no finding (seed {seed})");
    }
}

fn xor_name(name: &str) -> u64 {
    name.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    })
}
