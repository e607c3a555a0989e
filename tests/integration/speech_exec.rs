//! The real `process` agents behind `tts.speak` and `code.execute`, driven
//! through the real daemon binary over real ZeroMQ: TTSService (espeak-ng)
//! returns a WAV whose header and length fit the text; Executor runs
//! snippets within its wall-clock, memory and output limits, with none of
//! the daemon's environment and a scratch directory removed afterwards, and
//! refuses when `executor.enabled` is false; a SIGKILLed TTS child is
//! restarted and speaks again.

use std::path::Path;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::{Value, json};
use zeromq::{DealerSocket, Socket, SocketRecv, SocketSend, ZmqMessage};

use crate::util::{self, Daemon};

/// How long one reply or one expected state may take.
const WAIT: Duration = Duration::from_secs(30);

/// The Executor's wall-clock limit in these tests, seconds (default 10).
const EXEC_TIMEOUT_SECS: f64 = 2.0;

/// The Executor's output bound in these tests, bytes (default 65536).
const EXEC_OUTPUT_BYTES: usize = 4096;

/// Set in the daemon's environment; no snippet may see it.
const SECRET: (&str, &str) = ("AGENTVISOR_TEST_SECRET", "s3cret-from-the-daemon-env");

/// Starts `agentvisor run --profile PROFILE` in the project root on free
/// ports with extra `--set` overrides and environment, waits until it is
/// ready, and connects a DEALER to its ingress (read from `GET /health`).
async fn start(profile: &str, data: &Path, sets: &[String], env: &[(&str, &str)]) -> (Daemon, DealerSocket) {
    let (d, ingress, _) = Daemon::with_bus(profile, data, sets, env).await;
    let mut sock = DealerSocket::new();
    sock.connect(&ingress).await.expect("connect to the ingress");
    (d, sock)
}

/// Sends one task envelope.
async fn send(sock: &mut DealerSocket, envelope: Value) {
    sock.send(ZmqMessage::from(envelope.to_string())).await.expect("send");
}

/// The next reply on `sock` (streamed chunks are skipped).
async fn recv(sock: &mut DealerSocket) -> Value {
    loop {
        let msg = tokio::time::timeout(WAIT, sock.recv()).await.expect("a reply in time").expect("recv");
        let body = msg.into_vecdeque().into_iter().rfind(|f| !f.is_empty()).expect("a non-empty frame");
        let v: Value = serde_json::from_slice(&body).expect("the reply is JSON");
        if v["event"] != "chunk" {
            return v;
        }
    }
}

/// One task, its reply.
async fn ask(sock: &mut DealerSocket, envelope: Value) -> Value {
    send(sock, envelope).await;
    recv(sock).await
}

/// `GET /agents/NAME`.
async fn agent(d: &Daemon, name: &str) -> Value {
    let (status, body) = d.get_json(&format!("/agents/{name}")).await;
    assert_eq!(status, 200, "GET /agents/{name}: {body}");
    body
}

/// Polls `GET /agents/NAME` until `cond` holds; panics after [`WAIT`].
async fn wait_agent(d: &Daemon, name: &str, what: &str, cond: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + WAIT;
    loop {
        let a = agent(d, name).await;
        if cond(&a) {
            return a;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}: {a}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `true` when TTSService runs; when espeak-ng is missing (the agent is
/// `unavailable`) the test is skipped, except in CI, which installs it.
async fn tts_running(d: &Daemon) -> bool {
    let a = agent(d, "TTSService").await;
    if a["state"] == "running" {
        return true;
    }
    assert!(std::env::var_os("CI").is_none(), "TTSService must run in CI (apt-get install espeak-ng): {a}");
    eprintln!("TTSService is not running ({}); skipping (apt-get install espeak-ng)", a["reason"]);
    false
}

/// The `process` child's pid of a running agent record.
fn pid_of(record: &Value) -> u32 {
    let pid = record["pid"].as_u64().unwrap_or_else(|| panic!("no pid in {record}"));
    u32::try_from(pid).expect("a pid fits u32")
}

/// The environment of process `pid`, from `/proc/PID/environ`.
fn environ_of(pid: u32) -> String {
    let raw = std::fs::read(format!("/proc/{pid}/environ")).expect("read /proc/PID/environ");
    String::from_utf8_lossy(&raw).replace('\0', "\n")
}

/// The parts of a PCM WAV file these tests check, parsed by hand from the
/// RIFF chunks (format reference: Microsoft's RIFF/WAVE `fmt ` and `data`
/// chunk layout, little-endian).
struct Wav {
    channels: u16,
    sample_rate: u32,
    bits_per_sample: u16,
    /// Bytes per frame (all channels of one sample instant).
    block_align: u16,
    data: Vec<u8>,
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

impl Wav {
    /// Parses and checks `bytes`; panics with the reason when it is not a
    /// consistent PCM WAV file.
    fn parse(bytes: &[u8]) -> Wav {
        assert!(bytes.len() >= 12, "{} bytes are no WAV file", bytes.len());
        assert_eq!(&bytes[0..4], b"RIFF", "RIFF magic");
        assert_eq!(&bytes[8..12], b"WAVE", "WAVE form type");
        assert_eq!(u32_at(bytes, 4) as usize, bytes.len() - 8, "the RIFF size covers the file");
        let (mut fmt, mut data) = (None, None);
        let mut pos = 12;
        while pos + 8 <= bytes.len() {
            let id = &bytes[pos..pos + 4];
            let size = u32_at(bytes, pos + 4) as usize;
            let body = bytes
                .get(pos + 8..pos + 8 + size)
                .unwrap_or_else(|| panic!("chunk {:?} of {size} bytes overruns the file", String::from_utf8_lossy(id)));
            match id {
                b"fmt " => fmt = Some(body),
                b"data" => data = Some(body),
                _ => {}
            }
            pos += 8 + size + (size & 1);
        }
        let fmt = fmt.expect("a fmt chunk");
        let data = data.expect("a data chunk");
        assert!(fmt.len() >= 16, "fmt chunk of {} bytes", fmt.len());
        assert_eq!(u16_at(fmt, 0), 1, "PCM format");
        let wav = Wav {
            channels: u16_at(fmt, 2),
            sample_rate: u32_at(fmt, 4),
            block_align: u16_at(fmt, 12),
            bits_per_sample: u16_at(fmt, 14),
            data: data.to_vec(),
        };
        assert!(wav.channels >= 1, "no channels");
        assert_eq!(wav.block_align, wav.channels * wav.bits_per_sample / 8, "block align");
        assert_eq!(u32_at(fmt, 8), wav.sample_rate * u32::from(wav.block_align), "byte rate");
        assert_eq!(wav.data.len() % usize::from(wav.block_align), 0, "whole frames");
        wav
    }

    /// Seconds of audio.
    fn duration_secs(&self) -> f64 {
        (self.data.len() / usize::from(self.block_align)) as f64 / f64::from(self.sample_rate)
    }

    /// The loudest 16-bit sample's magnitude.
    fn peak(&self) -> u16 {
        assert_eq!(self.bits_per_sample, 16, "espeak-ng writes 16-bit samples");
        self.data.chunks_exact(2).map(|s| i16::from_le_bytes([s[0], s[1]]).unsigned_abs()).max().unwrap_or(0)
    }
}

/// Decodes the WAV of a `tts.speak` reply and checks it against the
/// reply's own `sample_rate`, `duration_seconds` and `bytes`.
fn speech_of(reply: &Value) -> Wav {
    assert_eq!(reply["status"], "ok", "{reply}");
    assert_eq!(reply["agent"], "TTSService", "{reply}");
    let out = &reply["output"];
    use base64::Engine;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(out["wav_base64"].as_str().expect("wav_base64"))
        .expect("valid base64");
    assert_eq!(out["bytes"].as_u64(), Some(bytes.len() as u64), "{out}");
    let wav = Wav::parse(&bytes);
    assert_eq!(out["sample_rate"].as_u64(), Some(u64::from(wav.sample_rate)));
    let said = out["duration_seconds"].as_f64().expect("duration_seconds");
    assert!((said - wav.duration_secs()).abs() < 0.01, "reply says {said} s, the data holds {} s", wav.duration_secs());
    wav
}

fn speak(id: &str, text: &str) -> Value {
    json!({"id": id, "type": "tts.speak", "input": text})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tts_speak_returns_a_wav_whose_length_fits_the_text() {
    let data = tempfile::tempdir().unwrap();
    let (mut d, mut sock) = start("core", data.path(), &[], &[]).await;
    if !tts_running(&d).await {
        return;
    }

    let hello = speech_of(&ask(&mut sock, speak("s1", "Hello world")).await);
    assert!((8_000..=48_000).contains(&hello.sample_rate), "sample rate {}", hello.sample_rate);
    assert!(hello.peak() > 1_000, "the audio is (nearly) silent: peak {}", hello.peak());
    let secs = hello.duration_secs();
    assert!((0.3..5.0).contains(&secs), "two words took {secs} s");

    // Several times the words: several times the audio.
    let long = speech_of(
        &ask(&mut sock, speak("s2", "Hello world. This sentence has quite a few more words than the first one.")).await,
    );
    assert!(long.duration_secs() > 2.0 * secs, "{} s for 15 words, {secs} s for 2", long.duration_secs());

    // An empty text is refused by the agent, which keeps running.
    let empty = ask(&mut sock, speak("s3", "  ")).await;
    assert_eq!(empty["status"], "error", "{empty}");
    assert!(empty["error"]["message"].as_str().is_some_and(|m| m.contains("text is empty")), "{empty}");
    assert_eq!(agent(&d, "TTSService").await["state"], "running");

    d.terminate(Duration::from_secs(15)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tts_child_killed_is_restarted_and_speaks_again() {
    let data = tempfile::tempdir().unwrap();
    let (mut d, mut sock) = start("core", data.path(), &[], &[]).await;
    if !tts_running(&d).await {
        return;
    }
    let before = agent(&d, "TTSService").await;
    let old = pid_of(&before);
    let restarts = before["restarts"].as_u64().expect("restarts");

    kill(Pid::from_raw(old as i32), Signal::SIGKILL).expect("SIGKILL the TTS child");
    let after = wait_agent(&d, "TTSService", "a new running TTS child", |a| {
        a["state"] == "running" && a["pid"].as_u64().is_some_and(|p| p != u64::from(old))
    })
    .await;
    assert_eq!(after["restarts"].as_u64(), Some(restarts + 1), "{after}");
    let new = pid_of(&after);
    assert!(util::pid_alive(new));
    util::poll_until(WAIT, "the killed child to be reaped", || !util::pid_alive(old)).await;

    let wav = speech_of(&ask(&mut sock, speak("s1", "Hello again")).await);
    assert!(wav.duration_secs() > 0.3);

    d.terminate(Duration::from_secs(15)).await;
    assert!(!util::pid_alive(new), "shutdown left the TTS child {new} running");
}

/// A profile with the bus (RequestCoordinator) and the Executor, and their
/// dependencies.
fn executor_profile(dir: &Path) -> String {
    let path = dir.join("exec.yaml");
    std::fs::write(
        &path,
        "profile: {name: exec, description: \"the bus and the Executor\"}\n\
         agent_selection: {include_agents: [RequestCoordinator, Executor]}\n",
    )
    .unwrap();
    path.display().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn executor_runs_snippets_within_its_limits() {
    let dir = tempfile::tempdir().unwrap();
    let profile = executor_profile(dir.path());
    let sets =
        [format!("executor.timeout_secs={EXEC_TIMEOUT_SECS}"), format!("executor.output_bytes={EXEC_OUTPUT_BYTES}")];
    let (mut d, mut sock) = start(&profile, dir.path(), &sets, &[SECRET]).await;
    assert_eq!(agent(&d, "Executor").await["state"], "dormant", "Executor starts on demand");

    // The first task starts it; the snippet's result comes back.
    let out = util::exec_output(&ask(&mut sock, util::exec_task("c1", "python", "print(6*7)")).await).clone();
    assert_eq!((out["stdout"].as_str(), out["stderr"].as_str()), (Some("42\n"), Some("")), "{out}");
    assert_eq!((out["exit_code"].as_i64(), out["truncated"].as_bool()), (Some(0), Some(false)), "{out}");
    assert!(out["duration_seconds"].as_f64().is_some_and(|s| s > 0.0 && s < EXEC_TIMEOUT_SECS), "{out}");
    let executor = pid_of(&agent(&d, "Executor").await);

    let out =
        util::exec_output(&ask(&mut sock, util::exec_task("c2", "sh", "echo $((6*7)); echo oops >&2; exit 3")).await)
            .clone();
    assert_eq!((out["stdout"].as_str(), out["stderr"].as_str()), (Some("42\n"), Some("oops\n")), "{out}");
    assert_eq!(out["exit_code"], 3, "{out}");

    // The secret is in the daemon's and the agent's environment, but no
    // snippet sees it, nor anything else inherited.
    let needle = format!("{}={}", SECRET.0, SECRET.1);
    let daemon = d.child.id().expect("daemon pid");
    assert!(environ_of(daemon).lines().any(|l| l == needle), "the daemon lacks the secret");
    assert!(environ_of(executor).lines().any(|l| l == needle), "the agent lacks the secret");
    let py = format!("import os\nprint(os.environ.get({:?}))\nprint(' '.join(sorted(os.environ)))", SECRET.0);
    let out = util::exec_output(&ask(&mut sock, util::exec_task("c3", "python", &py)).await).clone();
    assert_eq!(out["stdout"], "None\nHOME LANG PATH TMPDIR\n", "{out}");
    let sh = format!("echo \"[${}]\"; env | grep -c {} || true", SECRET.0, SECRET.1);
    let out = util::exec_output(&ask(&mut sock, util::exec_task("c4", "sh", &sh)).await).clone();
    assert_eq!(out["stdout"], "[]\n0\n", "{out}");

    // The scratch directory is the working directory and HOME, and is gone
    // once the answer is in.
    let py = "import os\nopen('left.txt', 'w').write('x')\nprint(os.getcwd())\nprint(os.environ['HOME'])";
    let out = util::exec_output(&ask(&mut sock, util::exec_task("c5", "python", py)).await).clone();
    let lines: Vec<&str> = out["stdout"].as_str().expect("stdout").lines().collect();
    assert_eq!(lines.len(), 2, "{out}");
    assert_eq!(lines[0], lines[1], "HOME is the scratch directory");
    assert!(Path::new(lines[0]).is_absolute() && lines[0].contains("agentvisor-exec-"), "{out}");
    assert!(!Path::new(lines[0]).exists(), "the scratch directory {} was left behind", lines[0]);

    // Output beyond the bound is dropped, and says so.
    let out = util::exec_output(&ask(&mut sock, util::exec_task("c6", "python", "print('x' * 100000)")).await).clone();
    assert_eq!(out["stdout"].as_str().map(str::len), Some(EXEC_OUTPUT_BYTES), "{}", out["stdout_bytes"]);
    assert_eq!((out["truncated"].as_bool(), out["stdout_bytes"].as_u64()), (Some(true), Some(100_001)));

    // A memory hog hits RLIMIT_AS (512 MiB by default): MemoryError, non-zero exit.
    let out = util::exec_output(
        &ask(&mut sock, util::exec_task("c7", "python", "x = bytearray(2 * 1024**3)\nprint('allocated')")).await,
    )
    .clone();
    assert_ne!(out["exit_code"], 0, "{out}");
    assert!(out["stderr"].as_str().is_some_and(|e| e.contains("MemoryError")), "{out}");
    assert_eq!(out["stdout"], "", "{out}");

    // An endless loop is killed at the wall-clock limit with `timeout`; a
    // short snippet sent after it is answered first (one thread per request).
    let t0 = Instant::now();
    send(&mut sock, util::exec_task("loop", "python", "while True:\n    pass")).await;
    send(&mut sock, util::exec_task("quick", "sh", "echo quick")).await;
    let first = recv(&mut sock).await;
    assert_eq!(first["id"], "quick", "{first}");
    assert_eq!(util::exec_output(&first)["stdout"], "quick\n");
    let looped = recv(&mut sock).await;
    let took = t0.elapsed().as_secs_f64();
    assert_eq!((looped["id"].as_str(), looped["status"].as_str()), (Some("loop"), Some("error")), "{looped}");
    let message = looped["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("Executor: timeout:"), "{looped}");
    assert!((EXEC_TIMEOUT_SECS..EXEC_TIMEOUT_SECS + 5.0).contains(&took), "the loop ended after {took} s");

    // The agent survived all of it, with the same child.
    assert_eq!(pid_of(&agent(&d, "Executor").await), executor);
    let out = util::exec_output(&ask(&mut sock, util::exec_task("c8", "python", "print('still here')")).await).clone();
    assert_eq!(out["stdout"], "still here\n");

    d.terminate(Duration::from_secs(15)).await;
    assert!(!util::pid_alive(executor), "shutdown left the Executor child {executor} running");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn executor_refuses_when_disabled() {
    let dir = tempfile::tempdir().unwrap();
    let profile = executor_profile(dir.path());
    // The snippet writes outside its scratch directory, which the policy gate
    // would refuse first; this test is about the Executor's own switch.
    let sets = ["executor.enabled=false".to_string(), "policy.enabled=false".to_string()];
    let (mut d, mut sock) = start(&profile, dir.path(), &sets, &[]).await;
    let marker = dir.path().join("ran");
    let py = format!("open({:?}, 'w').write('x')", marker.display().to_string());
    let reply = ask(&mut sock, util::exec_task("c1", "python", &py)).await;
    assert_eq!(reply["status"], "error", "{reply}");
    let message = reply["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("Executor: disabled:") && message.contains("executor.enabled: true"), "{reply}");
    assert!(!marker.exists(), "a disabled Executor ran the snippet");
    d.terminate(Duration::from_secs(15)).await;
}
