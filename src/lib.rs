//! crashmail: crash reports captured out of process, bundled and emailed.
//!
//! This crate is the heavy half: the watcher that writes the minidump and
//! builds the report, the outbox, the mail path, and the tools support
//! engineers use. Applications embed the small `crashmail-handler` crate.

pub mod assemble;
pub mod bundle;
pub mod cgroup;
pub mod check;
pub mod collect;
pub mod compose;
pub mod config;
pub mod delivery;
pub mod demo;
pub mod dump;
pub mod extract;
pub mod inspect;
pub mod link;
pub mod mail;
pub mod outbox;
pub mod outgoing;
pub mod privacy;
pub mod process_end;
pub mod receiver;
pub mod report;
pub mod sample_app;
pub mod setup;
pub mod symbolize;
pub mod triage;
pub mod watcher;
pub mod watcher_log;
