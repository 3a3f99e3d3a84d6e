//! Divan benchmarks of `keel_events::decode_envelope` on a pause event and an exit event. The
//! whole in-process path, decoding through delivery, is timed by `keel-bench` itself (section 4
//! of its report).

use containerd_client::events::{TaskExit, TaskPaused};
use containerd_client::types::Envelope;
use prost::Message as _;

fn main() {
    divan::main();
}

fn envelope(type_url: &str, value: Vec<u8>) -> Envelope {
    Envelope {
        timestamp: Some(std::time::SystemTime::now().into()),
        namespace: "bench".to_owned(),
        topic: "/tasks/exit".to_owned(),
        event: Some(prost_types::Any {
            type_url: type_url.to_owned(),
            value,
        }),
    }
}

#[divan::bench]
fn decode_paused(bencher: divan::Bencher) {
    let paused = TaskPaused {
        container_id: "web-1".to_owned(),
    };
    let envelope = envelope("containerd.events.TaskPaused", paused.encode_to_vec());
    bencher.bench_local(|| keel_events::decode_envelope(divan::black_box(&envelope)));
}

#[divan::bench]
fn decode_exit(bencher: divan::Bencher) {
    let exit = TaskExit {
        container_id: "web-1".to_owned(),
        id: "web-1".to_owned(),
        pid: 4242,
        exit_status: 0,
        exited_at: Some(std::time::SystemTime::now().into()),
    };
    let envelope = envelope("containerd.events.TaskExit", exit.encode_to_vec());
    bencher.bench_local(|| keel_events::decode_envelope(divan::black_box(&envelope)));
}
