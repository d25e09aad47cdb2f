//! Fault injection and history checking for Cairn.
//!
//! The first piece is a linearizability checker for recorded client
//! histories:
//!
//! * [`history`]: the recorded [`Operation`]s, a JSON-serializable
//!   [`History`], and a thread-safe [`Recorder`] for concurrent clients;
//! * [`model`]: sequential specifications ([`Model`]), with the per-key
//!   [`Register`] used for the key/value API;
//! * [`checker`]: the Wing & Gong / Lowe search with Porcupine-style
//!   memoisation, per-key partitioning, indeterminate operations, a
//!   step/time [`Budget`] and sound minimisation of failing histories.
//!
//! The fault-injection harness drives real `cairn` processes:
//!
//! * [`netns`]: a private network per run (bridge, one namespace per
//!   member, blackhole-route partitions, netem), removed on drop;
//! * [`harness`]: a cluster of `cairn serve` processes (on 127.0.0.1 or
//!   in a [`netns::NetLab`]) with SIGKILL + restart, SIGSTOP / SIGCONT and
//!   member replacement, killed on drop;
//! * [`power`]: each member's data dir on its own loop-mounted ext4,
//!   and a power cut that loses what the member did not sync;
//! * [`faults`]: the seeded fault schedule and its injection, including
//!   [`membership`] changes through the Cluster API;
//! * [`names`]: `cairn name register --hold` processes SIGKILLed, their
//!   names checked (one owner, gone within TTL, never back);
//! * [`watch_check`], [`lease_check`], [`side_workloads`]: the watch and
//!   lease workloads and their checks;
//! * [`certs`]: throwaway certificates (a CA, a member's, a client's, a
//!   stranger's from another CA) for TLS tests;
//! * [`proxy`]: userspace delay/loss (and partitions) for peer traffic
//!   where `tc netem` is unavailable;
//! * [`campaign`]: one seeded chaos run (fault schedule, recording
//!   clients, heal, linearizability, durability, replica-agreement, watch
//!   and lease checks). The `chaos` binary runs long campaigns; see
//!   `TESTING.md`.
//!
//! ```
//! use cairn_chaos::{check_history, Call, CheckOptions, History, Operation, Ret};
//! let h = History::new(vec![
//!     Operation::completed(1, "k", Call::Put { value: "a".into() }, 0, 10, Ret::Ok),
//!     // A read that starts after the put finished must see it.
//!     Operation::completed(2, "k", Call::Get, 20, 30, Ret::Value(None)),
//! ]);
//! let result = check_history(&h, &CheckOptions::default()).unwrap();
//! assert!(result.is_illegal());
//! println!("{result}");
//! ```

// Lets unit tests share helpers with the integration tests.
#[cfg(test)]
extern crate self as cairn_chaos;

pub mod campaign;
pub mod certs;
pub mod checker;
pub mod faults;
pub mod harness;
pub mod history;
pub mod lease_check;
pub mod membership;
mod minimize;
pub mod model;
pub mod names;
pub mod netns;
pub mod ports;
pub mod power;
pub mod proxy;
pub mod side_workloads;
pub mod watch_check;

pub use checker::{
    check_entries, check_history, check_register, Budget, CheckOptions, CheckResult, Entry,
    Verdict, Violation,
};
pub use history::{
    Call, History, HistoryError, Operation, PendingOp, Recorder, Ret, Value, SETUP_CLIENT,
};
pub use model::{Model, Register};
