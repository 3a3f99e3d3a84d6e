//! Decoding of containerd's cgroup metrics into keel's [`Stats`].
//!
//! containerd returns the runc shim's metrics as an `Any` holding
//! `io.containerd.cgroups.v1.Metrics` or `io.containerd.cgroups.v2.Metrics`. The messages
//! below declare only the fields keel reports, with the field numbers of those messages in
//! containerd's cgroups module; prost skips the rest.

use std::time::SystemTime;

use keel_types::{BlockIoStats, CgroupVersion, CpuStats, MemoryStats, PidsStats, Stats};
use prost::Message;

/// A failure to decode metrics.
#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    /// The payload's type is neither cgroup v1 nor v2 metrics.
    #[error("metrics of unknown type {0:?}")]
    UnknownType(String),
    /// The payload does not decode as its type.
    #[error("malformed metrics of type {type_url:?}")]
    Malformed {
        /// The payload's type URL.
        type_url: String,
        /// prost's error.
        #[source]
        source: prost::DecodeError,
    },
}

/// Decodes one metrics payload collected at `collected_at`.
///
/// # Errors
///
/// Returns [`MetricsError`] for an unknown type or bytes that do not decode.
pub fn decode_metrics(
    any: &prost_types::Any,
    collected_at: SystemTime,
) -> Result<Stats, MetricsError> {
    let type_name = any.type_url.rsplit('/').next().unwrap_or(&any.type_url);
    let malformed = |source| MetricsError::Malformed {
        type_url: type_name.to_owned(),
        source,
    };
    match type_name {
        "io.containerd.cgroups.v1.Metrics" => V1Metrics::decode(any.value.as_slice())
            .map(|metrics| metrics.into_stats(collected_at))
            .map_err(malformed),
        "io.containerd.cgroups.v2.Metrics" => V2Metrics::decode(any.value.as_slice())
            .map(|metrics| metrics.into_stats(collected_at))
            .map_err(malformed),
        other => Err(MetricsError::UnknownType(other.to_owned())),
    }
}

#[derive(Clone, PartialEq, Message)]
struct PidsStat {
    #[prost(uint64, tag = "1")]
    current: u64,
    #[prost(uint64, tag = "2")]
    limit: u64,
}

#[derive(Clone, PartialEq, Message)]
struct V1Metrics {
    #[prost(message, optional, tag = "2")]
    pids: Option<PidsStat>,
    #[prost(message, optional, tag = "3")]
    cpu: Option<V1Cpu>,
    #[prost(message, optional, tag = "4")]
    memory: Option<V1Memory>,
    #[prost(message, optional, tag = "5")]
    blkio: Option<V1BlkIo>,
    #[prost(message, optional, tag = "9")]
    memory_oom_control: Option<V1OomControl>,
}

#[derive(Clone, PartialEq, Message)]
struct V1Cpu {
    #[prost(message, optional, tag = "1")]
    usage: Option<V1CpuUsage>,
    #[prost(message, optional, tag = "2")]
    throttling: Option<V1Throttle>,
}

#[derive(Clone, PartialEq, Message)]
struct V1CpuUsage {
    #[prost(uint64, tag = "1")]
    total: u64,
    #[prost(uint64, tag = "2")]
    kernel: u64,
    #[prost(uint64, tag = "3")]
    user: u64,
}

#[derive(Clone, PartialEq, Message)]
struct V1Throttle {
    #[prost(uint64, tag = "2")]
    throttled_periods: u64,
    #[prost(uint64, tag = "3")]
    throttled_time: u64,
}

#[derive(Clone, PartialEq, Message)]
struct V1Memory {
    #[prost(uint64, tag = "1")]
    cache: u64,
    #[prost(uint64, tag = "2")]
    rss: u64,
    #[prost(message, optional, tag = "33")]
    usage: Option<V1MemoryEntry>,
    #[prost(message, optional, tag = "34")]
    swap: Option<V1MemoryEntry>,
}

#[derive(Clone, PartialEq, Message)]
struct V1MemoryEntry {
    #[prost(uint64, tag = "1")]
    limit: u64,
    #[prost(uint64, tag = "2")]
    usage: u64,
    #[prost(uint64, tag = "3")]
    max: u64,
}

#[derive(Clone, PartialEq, Message)]
struct V1OomControl {
    #[prost(uint64, tag = "3")]
    oom_kill: u64,
}

#[derive(Clone, PartialEq, Message)]
struct V1BlkIo {
    #[prost(message, repeated, tag = "1")]
    io_service_bytes_recursive: Vec<V1BlkIoEntry>,
    #[prost(message, repeated, tag = "2")]
    io_serviced_recursive: Vec<V1BlkIoEntry>,
}

#[derive(Clone, PartialEq, Message)]
struct V1BlkIoEntry {
    #[prost(string, tag = "1")]
    op: String,
    #[prost(uint64, tag = "3")]
    major: u64,
    #[prost(uint64, tag = "4")]
    minor: u64,
    #[prost(uint64, tag = "5")]
    value: u64,
}

impl V1Metrics {
    fn into_stats(self, collected_at: SystemTime) -> Stats {
        let cpu = self.cpu.unwrap_or_default();
        let usage = cpu.usage.unwrap_or_default();
        let throttling = cpu.throttling.unwrap_or_default();
        let memory = self.memory.unwrap_or_default();
        let memory_usage = memory.usage.unwrap_or_default();
        let pids = self.pids.unwrap_or_default();
        Stats {
            collected_at,
            cgroup: CgroupVersion::V1,
            cpu: CpuStats {
                usage_ns: usage.total,
                user_ns: usage.user,
                system_ns: usage.kernel,
                throttled_periods: throttling.throttled_periods,
                throttled_ns: throttling.throttled_time,
            },
            memory: MemoryStats {
                usage_bytes: memory_usage.usage,
                limit_bytes: memory_usage.limit,
                max_usage_bytes: memory_usage.max,
                cache_bytes: memory.cache,
                rss_bytes: memory.rss,
                // cgroup v1 counts memory and swap together in `memory.memsw.usage_in_bytes`.
                swap_usage_bytes: memory
                    .swap
                    .unwrap_or_default()
                    .usage
                    .saturating_sub(memory_usage.usage),
                oom_kills: self.memory_oom_control.unwrap_or_default().oom_kill,
            },
            pids: PidsStats {
                current: pids.current,
                limit: pids.limit,
            },
            block_io: self.blkio.map(v1_block_io).unwrap_or_default(),
        }
    }
}

/// Folds cgroup v1's per-operation rows into one entry per device.
fn v1_block_io(blkio: V1BlkIo) -> Vec<BlockIoStats> {
    let mut devices: Vec<BlockIoStats> = Vec::new();
    let rows = blkio
        .io_service_bytes_recursive
        .into_iter()
        .map(|row| (row, true))
        .chain(
            blkio
                .io_serviced_recursive
                .into_iter()
                .map(|row| (row, false)),
        );
    for (row, is_bytes) in rows {
        let index = match devices
            .iter()
            .position(|device| device.major == row.major && device.minor == row.minor)
        {
            Some(index) => index,
            None => {
                devices.push(BlockIoStats {
                    major: row.major,
                    minor: row.minor,
                    ..BlockIoStats::default()
                });
                devices.len() - 1
            }
        };
        let device = &mut devices[index];
        match (row.op.to_ascii_lowercase().as_str(), is_bytes) {
            ("read", true) => device.read_bytes = row.value,
            ("write", true) => device.write_bytes = row.value,
            ("read", false) => device.read_ops = row.value,
            ("write", false) => device.write_ops = row.value,
            _ => {}
        }
    }
    devices
}

#[derive(Clone, PartialEq, Message)]
struct V2Metrics {
    #[prost(message, optional, tag = "1")]
    pids: Option<PidsStat>,
    #[prost(message, optional, tag = "2")]
    cpu: Option<V2Cpu>,
    #[prost(message, optional, tag = "4")]
    memory: Option<V2Memory>,
    #[prost(message, optional, tag = "6")]
    io: Option<V2Io>,
    #[prost(message, optional, tag = "8")]
    memory_events: Option<V2MemoryEvents>,
}

#[derive(Clone, PartialEq, Message)]
struct V2Cpu {
    #[prost(uint64, tag = "1")]
    usage_usec: u64,
    #[prost(uint64, tag = "2")]
    user_usec: u64,
    #[prost(uint64, tag = "3")]
    system_usec: u64,
    #[prost(uint64, tag = "5")]
    nr_throttled: u64,
    #[prost(uint64, tag = "6")]
    throttled_usec: u64,
}

#[derive(Clone, PartialEq, Message)]
struct V2Memory {
    #[prost(uint64, tag = "1")]
    anon: u64,
    #[prost(uint64, tag = "2")]
    file: u64,
    #[prost(uint64, tag = "32")]
    usage: u64,
    #[prost(uint64, tag = "33")]
    usage_limit: u64,
    #[prost(uint64, tag = "34")]
    swap_usage: u64,
    #[prost(uint64, tag = "36")]
    max_usage: u64,
}

#[derive(Clone, PartialEq, Message)]
struct V2MemoryEvents {
    #[prost(uint64, tag = "5")]
    oom_kill: u64,
}

#[derive(Clone, PartialEq, Message)]
struct V2Io {
    #[prost(message, repeated, tag = "1")]
    usage: Vec<V2IoEntry>,
}

#[derive(Clone, PartialEq, Message)]
struct V2IoEntry {
    #[prost(uint64, tag = "1")]
    major: u64,
    #[prost(uint64, tag = "2")]
    minor: u64,
    #[prost(uint64, tag = "3")]
    rbytes: u64,
    #[prost(uint64, tag = "4")]
    wbytes: u64,
    #[prost(uint64, tag = "5")]
    rios: u64,
    #[prost(uint64, tag = "6")]
    wios: u64,
}

impl V2Metrics {
    fn into_stats(self, collected_at: SystemTime) -> Stats {
        let cpu = self.cpu.unwrap_or_default();
        let memory = self.memory.unwrap_or_default();
        let pids = self.pids.unwrap_or_default();
        let micros_to_nanos = |micros: u64| micros.saturating_mul(1000);
        Stats {
            collected_at,
            cgroup: CgroupVersion::V2,
            cpu: CpuStats {
                usage_ns: micros_to_nanos(cpu.usage_usec),
                user_ns: micros_to_nanos(cpu.user_usec),
                system_ns: micros_to_nanos(cpu.system_usec),
                throttled_periods: cpu.nr_throttled,
                throttled_ns: micros_to_nanos(cpu.throttled_usec),
            },
            memory: MemoryStats {
                usage_bytes: memory.usage,
                limit_bytes: memory.usage_limit,
                max_usage_bytes: memory.max_usage,
                cache_bytes: memory.file,
                rss_bytes: memory.anon,
                swap_usage_bytes: memory.swap_usage,
                oom_kills: self.memory_events.unwrap_or_default().oom_kill,
            },
            pids: PidsStats {
                current: pids.current,
                limit: pids.limit,
            },
            block_io: self
                .io
                .unwrap_or_default()
                .usage
                .into_iter()
                .map(|entry| BlockIoStats {
                    major: entry.major,
                    minor: entry.minor,
                    read_bytes: entry.rbytes,
                    write_bytes: entry.wbytes,
                    read_ops: entry.rios,
                    write_ops: entry.wios,
                })
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn any(type_url: &str, value: Vec<u8>) -> prost_types::Any {
        prost_types::Any {
            type_url: type_url.to_owned(),
            value,
        }
    }

    #[test]
    fn v1_metrics_decode() {
        let metrics = V1Metrics {
            pids: Some(PidsStat {
                current: 3,
                limit: 100,
            }),
            cpu: Some(V1Cpu {
                usage: Some(V1CpuUsage {
                    total: 10,
                    kernel: 4,
                    user: 6,
                }),
                throttling: None,
            }),
            memory: Some(V1Memory {
                cache: 1,
                rss: 2,
                usage: Some(V1MemoryEntry {
                    limit: 32 << 20,
                    usage: 5 << 20,
                    max: 6 << 20,
                }),
                swap: Some(V1MemoryEntry {
                    limit: 64 << 20,
                    usage: 7 << 20,
                    max: 8 << 20,
                }),
            }),
            blkio: Some(V1BlkIo {
                io_service_bytes_recursive: vec![
                    V1BlkIoEntry {
                        op: "Read".to_owned(),
                        major: 8,
                        minor: 0,
                        value: 512,
                    },
                    V1BlkIoEntry {
                        op: "Write".to_owned(),
                        major: 8,
                        minor: 0,
                        value: 1024,
                    },
                ],
                io_serviced_recursive: vec![V1BlkIoEntry {
                    op: "Read".to_owned(),
                    major: 8,
                    minor: 0,
                    value: 2,
                }],
            }),
            memory_oom_control: Some(V1OomControl { oom_kill: 1 }),
        };
        let stats = decode_metrics(
            &any("io.containerd.cgroups.v1.Metrics", metrics.encode_to_vec()),
            SystemTime::UNIX_EPOCH,
        )
        .expect("decodes");
        assert_eq!(stats.cgroup, CgroupVersion::V1);
        assert_eq!(stats.pids.current, 3);
        assert_eq!(stats.cpu.usage_ns, 10);
        assert_eq!(stats.cpu.system_ns, 4);
        assert_eq!(stats.memory.limit_bytes, 32 << 20);
        assert_eq!(stats.memory.oom_kills, 1);
        assert_eq!(stats.memory.swap_usage_bytes, 2 << 20);
        assert_eq!(stats.block_io.len(), 1);
        assert_eq!(stats.block_io[0].read_bytes, 512);
        assert_eq!(stats.block_io[0].write_bytes, 1024);
        assert_eq!(stats.block_io[0].read_ops, 2);
    }

    #[test]
    fn v2_metrics_decode() {
        let metrics = V2Metrics {
            pids: Some(PidsStat {
                current: 1,
                limit: 0,
            }),
            cpu: Some(V2Cpu {
                usage_usec: 7,
                user_usec: 5,
                system_usec: 2,
                nr_throttled: 0,
                throttled_usec: 0,
            }),
            memory: Some(V2Memory {
                anon: 4096,
                file: 8192,
                usage: 12288,
                usage_limit: 1 << 30,
                swap_usage: 0,
                max_usage: 20000,
            }),
            io: Some(V2Io {
                usage: vec![V2IoEntry {
                    major: 253,
                    minor: 0,
                    rbytes: 1,
                    wbytes: 2,
                    rios: 3,
                    wios: 4,
                }],
            }),
            memory_events: Some(V2MemoryEvents { oom_kill: 2 }),
        };
        let stats = decode_metrics(
            &any("io.containerd.cgroups.v2.Metrics", metrics.encode_to_vec()),
            SystemTime::UNIX_EPOCH,
        )
        .expect("decodes");
        assert_eq!(stats.cgroup, CgroupVersion::V2);
        assert_eq!(stats.cpu.usage_ns, 7000);
        assert_eq!(stats.memory.rss_bytes, 4096);
        assert_eq!(stats.memory.oom_kills, 2);
        assert_eq!(stats.block_io[0].write_ops, 4);
    }

    #[test]
    fn unknown_type_is_an_error() {
        let result = decode_metrics(&any("example.Other", Vec::new()), SystemTime::UNIX_EPOCH);
        assert!(
            matches!(result, Err(MetricsError::UnknownType(_))),
            "{result:?}"
        );
    }

    #[test]
    fn malformed_metrics_are_an_error() {
        let result = decode_metrics(
            &any("io.containerd.cgroups.v1.Metrics", vec![0xff, 0xff, 0xff]),
            SystemTime::UNIX_EPOCH,
        );
        assert!(
            matches!(result, Err(MetricsError::Malformed { .. })),
            "{result:?}"
        );
    }
}

#[cfg(test)]
mod fuzz {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        #[test]
        fn arbitrary_metrics_never_panic(
            v2 in any::<bool>(),
            value in proptest::collection::vec(any::<u8>(), 0..512),
        ) {
            let type_url = if v2 {
                "io.containerd.cgroups.v2.Metrics"
            } else {
                "io.containerd.cgroups.v1.Metrics"
            };
            let any = prost_types::Any { type_url: type_url.to_owned(), value };
            let _ = decode_metrics(&any, SystemTime::UNIX_EPOCH);
        }
    }
}
