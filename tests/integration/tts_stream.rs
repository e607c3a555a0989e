//! StreamingTTSAgent over real ZeroMQ: one audio chunk per sentence, each
//! synthesised by the real TTSService child (espeak-ng).

use std::time::Duration;

use serde_json::{Value, json};

use crate::util;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_sentence_streams_as_its_own_audio_chunk() {
    let dir = tempfile::tempdir().unwrap();
    let (fleet, ingress) = util::bus_fleet(dir.path(), "core", |_| {}).await;
    if fleet.ctx().state("TTSService") != Some(agentvisor::supervisor::AgentState::Running) {
        let reason = fleet.ctx().record("TTSService").and_then(|r| r.reason);
        assert!(std::env::var_os("CI").is_none(), "TTSService must run in CI: {reason:?}");
        eprintln!("TTSService not running ({reason:?}); skipping");
        return;
    }
    let mut sock = util::dealer(&ingress).await;
    let env =
        json!({"id": "s1", "type": "tts.stream", "input": "Hello there. How are you today? Fine!", "stream": true});
    util::send_json(&mut sock, &env).await;
    let mut chunks = Vec::new();
    let reply = loop {
        let v = util::recv_json(&mut sock).await;
        if v["event"] == "chunk" {
            chunks.push(serde_json::from_str::<Value>(v["delta"].as_str().unwrap()).unwrap());
        } else {
            break v;
        }
    };
    assert_eq!(reply["status"], "ok", "{reply}");
    assert_eq!(reply["output"]["sentences"], 3);
    let sentences: Vec<&str> = chunks.iter().map(|c| c["sentence"].as_str().unwrap()).collect();
    assert_eq!(sentences, ["Hello there.", "How are you today?", "Fine!"]);
    for c in &chunks {
        let wav = base64_decode(c["wav_base64"].as_str().unwrap());
        assert_eq!(&wav[0..4], b"RIFF");
        assert_eq!(&wav[8..12], b"WAVE");
        assert!(c["duration_seconds"].as_f64().unwrap() > 0.1, "{}", c["sentence"]);
    }
    fleet.shutdown(Duration::from_secs(10)).await;
}

fn base64_decode(s: &str) -> Vec<u8> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.decode(s).expect("valid base64")
}
