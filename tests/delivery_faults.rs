//! The outbox against servers that are down, refuse, stall or break, and
//! against crash loops: nothing is lost, nothing is sent twice without need,
//! no wait is unbounded, no mailbox is flooded.

mod common;

use common::*;
use crashmail::delivery::{Delivery, Due, Outcome};
use crashmail::outbox::{Outbox, FAILED, PENDING, SENT};
use crashmail::receiver::{LoopbackReceiver, ReceiverOptions};
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn flush(outbox: &Outbox, config: &crashmail::config::Config, due: Due) -> Vec<(String, Outcome)> {
    Delivery { config, outbox }
        .flush(due, &mut |_, _| {})
        .unwrap()
}

fn message_ids(receiver: &LoopbackReceiver) -> Vec<String> {
    receiver
        .messages()
        .iter()
        .map(|m| parse_mail(&m.data).message_id)
        .collect()
}

#[test]
fn server_down_with_twenty_queued_then_up_delivers_each_once() {
    let dir = tempfile::tempdir().unwrap();
    let outbox = Outbox::open(dir.path().join("outbox")).unwrap();
    for n in 0..20 {
        queue_report(
            &outbox,
            &format!(
                "distinct crash {}",
                ["a", "b", "c", "d", "e"][n % 5].repeat(n + 1)
            ),
            b"log\n",
        );
    }
    let port = unused_port();
    let config = config_for(dir.path(), port, "", "MailsPerHour = 100\n");
    let first = flush(&outbox, &config, Due::All);
    assert_eq!(first.len(), 20);
    assert!(
        matches!(&first[0].1, Outcome::Kept(why) if why.contains("connect")),
        "{first:?}"
    );
    assert!(
        first[1..].iter().all(
            |(_, o)| matches!(o, Outcome::NotTried(why) if why.contains("could not be reached"))
        ),
        "once the server cannot be reached, the rest of the flush is not tried: {first:?}"
    );
    assert_eq!(outbox.record(PENDING, &first[0].0).attempts, 1);
    assert_eq!(
        outbox.record(PENDING, &first[1].0).attempts,
        0,
        "a report not tried counts no attempt"
    );
    assert_eq!(
        zips_in(&outbox, PENDING),
        20,
        "nothing lost while the server is down"
    );

    let receiver = LoopbackReceiver::start_with(ReceiverOptions {
        port: Some(port),
        ..Default::default()
    })
    .unwrap();
    let second = flush(&outbox, &config, Due::All);
    assert!(
        second
            .iter()
            .all(|(_, o)| matches!(o, Outcome::Sent | Outcome::SentInDigest { .. })),
        "{second:?}"
    );
    let ids = message_ids(&receiver);
    assert_eq!(ids.len(), 20);
    let mut unique = ids.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), 20, "each report once");
    assert_eq!(zips_in(&outbox, SENT), 20);
}

/// A peer that answers each connection by its number: `script(n, conversation)`.
fn counting_peer(
    script: impl Fn(usize, &mut Conversation) + Send + Sync + 'static,
) -> (ScriptedPeer, Arc<AtomicUsize>) {
    let connections = Arc::new(AtomicUsize::new(0));
    let counter = connections.clone();
    let peer = ScriptedPeer::start(move |c| {
        let n = counter.fetch_add(1, Ordering::SeqCst);
        script(n, c)
    });
    (peer, connections)
}

fn one_report_through(
    peer_port: u16,
) -> (tempfile::TempDir, Outbox, crashmail::config::Config, String) {
    let dir = tempfile::tempdir().unwrap();
    let outbox = Outbox::open(dir.path().join("outbox")).unwrap();
    let id = queue_report(&outbox, "boom", b"log\n");
    let config = config_for(dir.path(), peer_port, "", "");
    (dir, outbox, config, id)
}

#[test]
fn a_server_that_never_greets_costs_a_flush_one_timeout_not_one_per_report() {
    let (peer, connections) = counting_peer(|_, c| {
        // Accepts, then says nothing until the client gives up.
        while c.recv().is_some() {}
    });
    let dir = tempfile::tempdir().unwrap();
    let outbox = Outbox::open(dir.path().join("outbox")).unwrap();
    for crash in ["first crash", "second crash", "third crash", "fourth crash"] {
        queue_report(&outbox, crash, b"log\n");
    }
    let config = config_for(dir.path(), peer.port, "", "MailsPerHour = 100\n");
    let outcomes = flush(&outbox, &config, Due::All);
    assert_eq!(outcomes.len(), 4);
    assert!(
        matches!(&outcomes[0].1, Outcome::Kept(why) if why.contains("sent no greeting within 2s")),
        "{outcomes:?}"
    );
    assert!(
        outcomes[1..]
            .iter()
            .all(|(_, o)| matches!(o, Outcome::NotTried(_))),
        "{outcomes:?}"
    );
    assert_eq!(
        connections.load(Ordering::SeqCst),
        1,
        "one connection waited out, not one per report"
    );
    assert_eq!(zips_in(&outbox, PENDING), 4, "nothing lost");
}

#[test]
fn a_server_that_hangs_up_before_greeting_is_named_so_and_retried() {
    let (peer, _) = counting_peer(|_, _| {
        // Accepts and closes at once.
    });
    let (_dir, outbox, config, id) = one_report_through(peer.port);
    let outcomes = flush(&outbox, &config, Due::All);
    assert!(
        matches!(&outcomes[0].1, Outcome::Kept(why) if why.contains("closed it without a greeting")),
        "{outcomes:?}"
    );
    assert_eq!(outbox.record(PENDING, &id).attempts, 1);
}

#[test]
fn a_421_greeting_is_retried_and_then_delivered() {
    let (peer, _) = counting_peer(|n, c| {
        if n == 0 {
            c.send("421 4.3.2 too busy");
        } else {
            c.send("220 ok");
            c.serve("250 ok", "235 ok");
        }
    });
    let (_dir, outbox, config, id) = one_report_through(peer.port);
    let first = flush(&outbox, &config, Due::All);
    assert!(
        matches!(&first[0].1, Outcome::Kept(why) if why.contains("421")),
        "{first:?}"
    );
    let record = outbox.record(PENDING, &id);
    assert_eq!(record.attempts, 1);
    assert!(
        !record.is_due(chrono::Utc::now(), &config.fingerprint),
        "backoff before the next try"
    );
    let second = flush(&outbox, &config, Due::All);
    assert_eq!(second[0].1, Outcome::Sent);
}

#[test]
fn a_452_to_rcpt_is_retried_and_then_delivered() {
    let (peer, _) = counting_peer(|n, c| {
        c.send("220 ok");
        while let Some(line) = c.recv() {
            if line.starts_with("RCPT") && n == 0 {
                c.send("452 4.2.2 mailbox full, try later");
            } else if line == "DATA" {
                c.send("354 go");
                c.read_message();
                c.send("250 queued");
            } else if line == "QUIT" {
                c.send("221 bye");
                return;
            } else {
                c.send("250 ok");
            }
        }
    });
    let (_dir, outbox, config, _id) = one_report_through(peer.port);
    let first = flush(&outbox, &config, Due::All);
    assert!(
        matches!(&first[0].1, Outcome::Kept(why) if why.contains("452")),
        "{first:?}"
    );
    let second = flush(&outbox, &config, Due::All);
    assert_eq!(second[0].1, Outcome::Sent);
}

#[test]
fn a_connection_reset_in_the_middle_of_data_is_retried_and_then_delivered() {
    let (peer, _) = counting_peer(|n, c| {
        c.send("220 ok");
        while let Some(line) = c.recv() {
            match line.as_str() {
                "DATA" if n == 0 => {
                    c.send("354 go");
                    // Read a little of the message, then drop the line.
                    let _ = c.recv();
                    return;
                }
                "DATA" => {
                    c.send("354 go");
                    c.read_message();
                    c.send("250 queued");
                }
                "QUIT" => {
                    c.send("221 bye");
                    return;
                }
                _ => c.send("250 ok"),
            }
        }
    });
    let (_dir, outbox, config, _id) = one_report_through(peer.port);
    let first = flush(&outbox, &config, Due::All);
    assert!(matches!(&first[0].1, Outcome::Kept(_)), "{first:?}");
    let second = flush(&outbox, &config, Due::All);
    assert_eq!(second[0].1, Outcome::Sent);
}

#[test]
fn a_550_after_data_fails_after_exactly_one_attempt_with_the_servers_words() {
    let (peer, connections) = counting_peer(|_, c| {
        c.send("220 ok");
        while let Some(line) = c.recv() {
            match line.as_str() {
                "DATA" => {
                    c.send("354 go");
                    c.read_message();
                    c.send("550 5.7.1 message refused: policy violation");
                }
                "QUIT" => {
                    c.send("221 bye");
                    return;
                }
                _ => c.send("250 ok"),
            }
        }
    });
    let (_dir, outbox, config, id) = one_report_through(peer.port);
    let first = flush(&outbox, &config, Due::All);
    assert!(
        matches!(&first[0].1, Outcome::Failed(why) if why.contains("policy violation")),
        "{first:?}"
    );
    assert_eq!(zips_in(&outbox, FAILED), 1);
    let record = outbox.record(FAILED, &id);
    assert_eq!(record.attempts, 1);
    let error = record.last_error.unwrap();
    assert!(error.contains("550 5.7.1 message refused"), "{error}");
    assert!(
        flush(&outbox, &config, Due::All).is_empty(),
        "a failed report is not tried again"
    );
    assert_eq!(connections.load(Ordering::SeqCst), 1);
}

#[test]
fn a_server_that_never_answers_after_data_cannot_hold_the_sender() {
    let peer = ScriptedPeer::start(|c| {
        c.send("220 ok");
        while let Some(line) = c.recv() {
            match line.as_str() {
                "DATA" => {
                    c.send("354 go");
                    c.read_message();
                    std::thread::sleep(Duration::from_secs(60));
                    return;
                }
                _ => c.send("250 ok"),
            }
        }
    });
    let (_dir, outbox, config, _id) = one_report_through(peer.port);
    let started = Instant::now();
    let outcomes = flush(&outbox, &config, Due::All);
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "bounded by Timeout = 2: {:?}",
        started.elapsed()
    );
    assert!(
        matches!(&outcomes[0].1, Outcome::Kept(why) if why.contains("may have the message")),
        "{outcomes:?}"
    );
    assert_eq!(zips_in(&outbox, PENDING), 1, "the report stays pending");
}

#[test]
fn a_size_limit_of_one_megabyte_with_five_megabytes_of_logs_is_kept_and_said() {
    let received: Arc<std::sync::Mutex<Vec<Vec<u8>>>> = Arc::default();
    let store = received.clone();
    let peer = ScriptedPeer::start(move |c| {
        c.send("220 ok");
        while let Some(line) = c.recv() {
            match line.split_whitespace().next().unwrap_or("") {
                "EHLO" => c.send("250-small.example.com\r\n250 SIZE 1048576"),
                "DATA" => {
                    c.send("354 go");
                    let message = c.read_message();
                    let too_big = message.len() > 1_048_576;
                    store.lock().unwrap().push(message);
                    c.send(if too_big {
                        "552 5.3.4 message too big"
                    } else {
                        "250 queued"
                    });
                }
                "QUIT" => {
                    c.send("221 bye");
                    return;
                }
                _ => c.send("250 ok"),
            }
        }
    });
    let dir = tempfile::tempdir().unwrap();
    let outbox = Outbox::open(dir.path().join("outbox")).unwrap();
    queue_report(&outbox, "boom", &noisy_log(5 * 1024 * 1024));
    let config = config_for(dir.path(), peer.port, "", "");
    let outcomes = flush(&outbox, &config, Due::All);
    assert_eq!(outcomes[0].1, Outcome::Sent);
    let messages = received.lock().unwrap();
    assert_eq!(messages.len(), 1, "fitted before sending, not after a 552");
    assert!(
        messages[0].len() <= 1_048_576,
        "{} bytes",
        messages[0].len()
    );
    assert!(
        peer.received()
            .iter()
            .any(|l| l.starts_with("MAIL FROM:") && l.contains("SIZE=")),
        "{:?}",
        peer.received()
    );
    let mail = parse_mail(&messages[0]);
    assert!(
        mail.text.contains("truncated from the front"),
        "{}",
        mail.text
    );
    assert!(mail.entries.contains_key("report.json"));
    let log = mail
        .entries
        .iter()
        .find(|(name, _)| name.starts_with("logs/"))
        .map(|(_, bytes)| bytes)
        .unwrap();
    assert!(log.len() < 1_048_576 && !log.is_empty());
    assert!(
        noisy_log(5 * 1024 * 1024).ends_with(log),
        "the tail is kept, byte for byte"
    );
}

#[test]
fn a_552_gets_one_more_try_without_the_minidump() {
    let (peer, connections) = counting_peer(|n, c| {
        c.send("220 ok");
        while let Some(line) = c.recv() {
            match line.as_str() {
                "DATA" => {
                    c.send("354 go");
                    c.read_message();
                    c.send(if n == 0 {
                        "552 5.3.4 too big for this mailbox"
                    } else {
                        "250 queued"
                    });
                }
                "QUIT" => {
                    c.send("221 bye");
                    return;
                }
                _ => c.send("250 ok"),
            }
        }
    });
    let (_dir, outbox, config, _id) = one_report_through(peer.port);
    let outcomes = flush(&outbox, &config, Due::All);
    assert_eq!(outcomes[0].1, Outcome::Sent);
    assert_eq!(connections.load(Ordering::SeqCst), 2);
}

#[test]
fn two_flushers_on_one_outbox_send_each_of_fifty_reports_exactly_once() {
    let receiver = LoopbackReceiver::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let outbox_dir = dir.path().join("outbox");
    let outbox = Outbox::open(&outbox_dir).unwrap();
    for n in 0..50 {
        queue_report(&outbox, &format!("crash {}", "x".repeat(n + 1)), b"log\n");
    }
    let config = config_for(dir.path(), receiver.port(), "", "MailsPerHour = 200\n");
    let flushers: Vec<_> = (0..2)
        .map(|_| {
            std::process::Command::new(crashmail_exe())
                .args(["outbox", "flush", "--outbox"])
                .arg(&outbox_dir)
                .arg("--ini")
                .arg(&config.path)
                .stdout(std::process::Stdio::null())
                .spawn()
                .unwrap()
        })
        .collect();
    for mut flusher in flushers {
        assert!(flusher.wait().unwrap().success());
    }
    let ids = message_ids(&receiver);
    assert_eq!(ids.len(), 50, "each report arrived");
    let mut counts: HashMap<String, usize> = HashMap::new();
    for id in ids {
        *counts.entry(id).or_default() += 1;
    }
    assert!(counts.values().all(|n| *n == 1), "none twice: {counts:?}");
    assert_eq!(zips_in(&outbox, SENT), 50);
}

#[test]
fn a_flusher_killed_right_after_the_servers_250_causes_at_most_one_duplicate() {
    let (tx, rx) = std::sync::mpsc::channel::<Vec<u8>>();
    let tx = std::sync::Mutex::new(tx);
    let peer = ScriptedPeer::start(move |c| {
        c.send("220 ok");
        while let Some(line) = c.recv() {
            match line.as_str() {
                "DATA" => {
                    c.send("354 go");
                    let message = c.read_message();
                    c.send("250 queued");
                    let _ = tx.lock().unwrap().send(message);
                    std::thread::sleep(Duration::from_secs(5));
                    return;
                }
                _ => c.send("250 ok"),
            }
        }
    });
    let dir = tempfile::tempdir().unwrap();
    let outbox_dir = dir.path().join("outbox");
    let outbox = Outbox::open(&outbox_dir).unwrap();
    queue_report(&outbox, "boom", b"log\n");
    let config = config_for(dir.path(), peer.port, "", "");
    let mut flusher = std::process::Command::new(crashmail_exe())
        .args(["outbox", "flush", "--outbox"])
        .arg(&outbox_dir)
        .arg("--ini")
        .arg(&config.path)
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let first_copy = rx
        .recv_timeout(Duration::from_secs(20))
        .expect("the message reached the server");
    flusher.kill().unwrap();
    flusher.wait().unwrap();

    // The next flush, against a real server, finds the dead sender's claim
    // and sends the report again, if it was not yet marked sent.
    let receiver = LoopbackReceiver::start().unwrap();
    let config = config_for(dir.path(), receiver.port(), "", "");
    std::thread::sleep(Duration::from_millis(2100));
    flush(&outbox, &config, Due::All);
    let resent = receiver.messages();
    assert!(resent.len() <= 1, "at most one duplicate");
    if let Some(copy) = resent.first() {
        assert_eq!(
            parse_mail(&copy.data).message_id,
            parse_mail(&first_copy).message_id,
            "the duplicate carries the same Message-ID"
        );
    }
    assert_eq!(zips_in(&outbox, SENT), 1, "the report ends in sent/, once");
    assert_eq!(zips_in(&outbox, PENDING) + zips_in(&outbox, "sending"), 0);
}

#[test]
fn a_crash_loop_stays_within_the_hourly_limit_and_loses_nothing() {
    let receiver = LoopbackReceiver::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let outbox = Outbox::open(dir.path().join("outbox")).unwrap();
    for _ in 0..100 {
        queue_report(&outbox, "the same panic", b"log\n");
    }
    for n in 0..50 {
        queue_report(
            &outbox,
            &format!("different {}", "q".repeat(n + 1)),
            b"log\n",
        );
    }
    let config = config_for(dir.path(), receiver.port(), "", "MailsPerHour = 30\n");
    let outcomes = flush(&outbox, &config, Due::Only);
    assert_eq!(receiver.messages().len(), 30, "exactly the hourly limit");
    let held = outcomes
        .iter()
        .filter(|(_, o)| matches!(o, Outcome::Held(_)))
        .count();
    assert_eq!(held, 120);
    assert_eq!(
        zips_in(&outbox, PENDING) + zips_in(&outbox, SENT),
        150,
        "nothing lost from the outbox's record"
    );
    // A second flush in the same hour sends nothing more.
    flush(&outbox, &config, Due::Only);
    assert_eq!(receiver.messages().len(), 30);
    // Each held report says why it waits.
    for id in outbox.pending().unwrap() {
        let held = outbox.record(PENDING, &id).held.expect("a reason");
        assert!(
            held.contains("30 mails an hour") || held.contains("a repeat"),
            "{held}"
        );
    }
}

/// `RepeatWindow = 0` turns holding off: every repeat is mailed.
#[test]
fn a_repeat_window_of_zero_mails_every_repeat() {
    let receiver = LoopbackReceiver::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let outbox = Outbox::open(dir.path().join("outbox")).unwrap();
    let config = config_for(
        dir.path(),
        receiver.port(),
        "",
        "RepeatWindow = 0\nMailsPerHour = 100\n",
    );
    for _ in 0..3 {
        queue_report(&outbox, "the same panic", b"log\n");
        let outcomes = flush(&outbox, &config, Due::Only);
        assert!(
            outcomes.iter().all(|(_, o)| matches!(o, Outcome::Sent)),
            "{outcomes:?}"
        );
    }
    assert_eq!(receiver.messages().len(), 3);
    let shown = config
        .settings
        .iter()
        .find(|s| s.key == "RepeatWindow")
        .unwrap();
    assert_eq!(shown.value, "0 (every repeat is mailed)");
}

#[test]
fn repeats_of_one_crash_are_mailed_once_then_as_one_digest_with_the_count() {
    let receiver = LoopbackReceiver::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let outbox = Outbox::open(dir.path().join("outbox")).unwrap();
    let config = config_for(
        dir.path(),
        receiver.port(),
        "",
        "RepeatWindow = 2s\nMailsPerHour = 100\n",
    );
    queue_report(&outbox, "the same panic", b"log\n");
    flush(&outbox, &config, Due::Only);
    assert_eq!(receiver.messages().len(), 1, "the first is mailed at once");
    for _ in 0..99 {
        queue_report(&outbox, "the same panic", b"log\n");
    }
    let outcomes = flush(&outbox, &config, Due::Only);
    assert!(
        outcomes.iter().all(|(_, o)| matches!(o, Outcome::Held(_))),
        "repeats are held"
    );
    assert_eq!(receiver.messages().len(), 1);

    std::thread::sleep(Duration::from_millis(2200));
    flush(&outbox, &config, Due::Only);
    let messages = receiver.messages();
    assert_eq!(messages.len(), 2, "one digest for the 99 repeats");
    let digest = parse_mail(&messages[1].data);
    assert!(
        digest
            .text
            .contains("occurred 99 more times since the report mailed at"),
        "{}",
        digest.text
    );
    assert_eq!(
        report_json(&digest)["occurrences"],
        1,
        "the attached report is one crash; the count is in the mail"
    );
    assert_eq!(zips_in(&outbox, SENT), 100, "every repeat is accounted for");
    let coalesced = files_in(&outbox.dir(SENT))
        .iter()
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .filter(|p| {
            std::fs::read_to_string(p)
                .unwrap()
                .contains("coalesced_into")
        })
        .count();
    assert!(coalesced >= 98, "{coalesced}");
}

#[test]
fn over_its_limit_the_outbox_drops_the_oldest_repeats_never_a_distinct_crash() {
    let dir = tempfile::tempdir().unwrap();
    let outbox = Outbox::open(dir.path().join("outbox")).unwrap();
    for _ in 0..8 {
        queue_report(&outbox, "the same panic", b"log\n");
    }
    for word in ["alpha", "bravo", "charlie", "delta"] {
        queue_report(&outbox, &format!("distinct {word}"), b"log\n");
    }
    let receiver = LoopbackReceiver::start().unwrap();
    let config = config_for(
        dir.path(),
        receiver.port(),
        "",
        "MaxReports = 5\nMailsPerHour = 100\n",
    );
    let dropped = Delivery {
        config: &config,
        outbox: &outbox,
    }
    .enforce_limits()
    .unwrap();
    assert_eq!(dropped.len(), 7, "the repeats go down to one");
    assert_eq!(
        zips_in(&outbox, PENDING),
        5,
        "one repeat and the four distinct crashes"
    );
    let log = std::fs::read_to_string(outbox.root().join("dropped.log")).unwrap();
    assert_eq!(log.lines().count(), 7, "every drop is noted");

    // Still over with only distinct crashes: nothing more is dropped.
    let config = config_for(
        dir.path(),
        receiver.port(),
        "",
        "MaxReports = 2\nMailsPerHour = 100\n",
    );
    assert!(Delivery {
        config: &config,
        outbox: &outbox
    }
    .enforce_limits()
    .unwrap()
    .is_empty());
    assert_eq!(zips_in(&outbox, PENDING), 5);

    flush(&outbox, &config, Due::All);
    let texts: Vec<String> = receiver
        .messages()
        .iter()
        .map(|m| parse_mail(&m.data).text)
        .collect();
    assert!(
        texts
            .iter()
            .any(|t| t.contains("7 older repeat(s) of this crash were dropped")),
        "{texts:?}"
    );
}

#[test]
fn a_report_that_cannot_be_delivered_for_too_long_goes_to_failed_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let outbox = Outbox::open(dir.path().join("outbox")).unwrap();
    let id = queue_report(&outbox, "boom", b"log\n");
    let config = config_for(dir.path(), unused_port(), "", "GiveUpAfter = 1s\n");
    let first = flush(&outbox, &config, Due::All);
    assert!(matches!(&first[0].1, Outcome::Kept(_)), "{first:?}");
    std::thread::sleep(Duration::from_millis(1100));
    let second = flush(&outbox, &config, Due::All);
    assert!(
        matches!(&second[0].1, Outcome::Failed(why) if why.contains("gave up")),
        "{second:?}"
    );
    let record = outbox.record(FAILED, &id);
    assert_eq!(record.attempts, 2);
    assert!(record.last_error.unwrap().contains("refused"));
}

#[test]
fn refused_credentials_wait_for_a_configuration_change_not_a_tight_loop() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, cert, key) = test_certificates(dir.path(), "mail.example.com");
    let receiver = LoopbackReceiver::start_with(ReceiverOptions {
        tls: Some((cert, key)),
        credentials: Some(("bot".into(), "right".into())),
        auth: vec![crashmail::receiver::AuthMechanism::Plain],
        port: None,
    })
    .unwrap();
    let outbox = Outbox::open(dir.path().join("outbox")).unwrap();
    let id = queue_report(&outbox, "boom", b"log\n");
    let smtp = |password: &str| {
        format!(
            "Security = starttls\nTlsServerName = mail.example.com\nCaFile = {}\nUser = bot\nPassword = {password}\n",
            ca.display()
        )
    };
    let config = config_for(dir.path(), receiver.port(), &smtp("wrong"), "");
    let first = flush(&outbox, &config, Due::All);
    assert!(
        matches!(&first[0].1, Outcome::Kept(why) if why.starts_with("configuration problem") && why.contains("535")),
        "{first:?}"
    );
    assert!(
        flush(&outbox, &config, Due::Only).is_empty(),
        "not retried while nothing changed"
    );
    assert_eq!(receiver.logins().len(), 1);

    std::thread::sleep(Duration::from_millis(20));
    let fixed = config_for(dir.path(), receiver.port(), &smtp("right"), "");
    assert_ne!(fixed.fingerprint, config.fingerprint);
    let after_fix = flush(&outbox, &fixed, Due::Only);
    assert_eq!(after_fix, vec![(id, Outcome::Sent)]);
}

#[test]
fn a_flush_of_several_reports_uses_one_connection_and_delivers_each_once() {
    let receiver = LoopbackReceiver::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let outbox = Outbox::open(dir.path().join("outbox")).unwrap();
    for word in ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot"] {
        queue_report(&outbox, &format!("distinct {word}"), b"log\n");
    }
    let config = config_for(dir.path(), receiver.port(), "", "MailsPerHour = 100\n");
    let outcomes = flush(&outbox, &config, Due::All);
    assert!(
        outcomes.iter().all(|(_, o)| *o == Outcome::Sent),
        "{outcomes:?}"
    );
    let messages = receiver.messages();
    assert_eq!(messages.len(), 6);
    assert_eq!(receiver.sessions(), 1, "one connection for the whole flush");
    assert!(messages.iter().all(|m| m.session == messages[0].session));
    let mut ids = message_ids(&receiver);
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 6, "each report once");
    assert_eq!(zips_in(&outbox, SENT), 6);
}

/// Five distinct reports flushed to a peer whose first connection accepts
/// two messages and then does `fault`; later connections are answered by
/// `later`. Returns the outbox, its config, the first flush's outcomes and
/// every message the peer accepted.
#[allow(clippy::type_complexity)]
fn five_reports_through_a_peer_that_fails_after_two(
    dir: &std::path::Path,
    fault: fn(&mut Conversation),
    later: fn(&mut Conversation),
) -> (
    Outbox,
    Vec<(String, Outcome)>,
    Vec<String>,
    Arc<AtomicUsize>,
) {
    let accepted: Arc<std::sync::Mutex<Vec<String>>> = Arc::default();
    let store = accepted.clone();
    let (peer, connections) = counting_peer(move |n, c| {
        if n > 0 {
            return later(c);
        }
        c.send("220 ok");
        let mut carried = 0;
        while let Some(line) = c.recv() {
            match line.as_str() {
                "DATA" => {
                    c.send("354 go");
                    let message = c.read_message();
                    store.lock().unwrap().push(parse_mail(&message).message_id);
                    c.send("250 queued");
                    carried += 1;
                    if carried == 2 {
                        return fault(c);
                    }
                }
                "QUIT" => {
                    c.send("221 bye");
                    return;
                }
                _ => c.send("250 ok"),
            }
        }
    });
    let outbox = Outbox::open(dir.join("outbox")).unwrap();
    for word in ["alpha", "bravo", "charlie", "delta", "echo"] {
        queue_report(&outbox, &format!("distinct {word}"), b"log\n");
    }
    let config = config_for(dir, peer.port, "", "MailsPerHour = 100\n");
    let outcomes = flush(&outbox, &config, Due::All);
    let accepted = accepted.lock().unwrap().clone();
    (outbox, outcomes, accepted, connections)
}

fn drop_the_line(_: &mut Conversation) {}

fn answer_421_to_the_next_command(c: &mut Conversation) {
    if c.recv().is_some() {
        c.send("421 4.3.2 closing the channel");
    }
}

fn too_busy(c: &mut Conversation) {
    c.send("421 4.3.2 too busy");
}

#[test]
fn a_line_dropped_or_a_421_after_the_second_of_five_messages_loses_nothing_and_sends_nothing_twice()
{
    for fault in [drop_the_line, answer_421_to_the_next_command] {
        let dir = tempfile::tempdir().unwrap();
        let (outbox, first, accepted, _) =
            five_reports_through_a_peer_that_fails_after_two(dir.path(), fault, too_busy);
        let sent = first.iter().filter(|(_, o)| *o == Outcome::Sent).count();
        assert_eq!(sent, 2, "{first:?}");
        assert_eq!(accepted.len(), 2, "both on the first connection");
        assert_eq!(zips_in(&outbox, SENT), 2, "the accepted two are sent");
        assert_eq!(zips_in(&outbox, PENDING), 3, "the rest wait");
        let records: Vec<_> = outbox
            .pending()
            .unwrap()
            .iter()
            .map(|id| outbox.record(PENDING, id))
            .collect();
        let tried: Vec<_> = records.iter().filter(|r| r.attempts == 1).collect();
        assert_eq!(
            tried.len(),
            1,
            "the third met the busy server; the last two were not tried: {records:?}"
        );
        assert!(
            tried[0]
                .last_error
                .as_deref()
                .is_some_and(|e| e.contains("421")),
            "{records:?}"
        );
        assert_eq!(
            records.iter().filter(|r| r.attempts == 0).count(),
            2,
            "{records:?}"
        );

        let receiver = LoopbackReceiver::start().unwrap();
        let config = config_for(dir.path(), receiver.port(), "", "MailsPerHour = 100\n");
        let second = flush(&outbox, &config, Due::All);
        assert_eq!(second.len(), 3, "only the three that waited: {second:?}");
        assert!(second.iter().all(|(_, o)| *o == Outcome::Sent));
        let mut ids = accepted.clone();
        ids.extend(message_ids(&receiver));
        assert_eq!(ids.len(), 5);
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), 5, "each report once, across both servers");
        assert_eq!(zips_in(&outbox, SENT), 5);
        assert_eq!(zips_in(&outbox, PENDING) + zips_in(&outbox, "sending"), 0);
    }
}

#[test]
fn a_connection_closed_between_messages_is_reopened_for_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let (outbox, outcomes, accepted, connections) =
        five_reports_through_a_peer_that_fails_after_two(dir.path(), drop_the_line, |c| {
            c.send("220 ok");
            c.serve("250 ok", "235 ok");
        });
    assert!(
        outcomes.iter().all(|(_, o)| *o == Outcome::Sent),
        "{outcomes:?}"
    );
    assert_eq!(accepted.len(), 2);
    assert_eq!(connections.load(Ordering::SeqCst), 2, "reopened once");
    assert_eq!(zips_in(&outbox, SENT), 5);
}

#[test]
fn flush_names_the_report_a_digest_carried_and_held_reports_alone_are_not_a_failure() {
    let receiver = LoopbackReceiver::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let outbox = Outbox::open(dir.path().join("outbox")).unwrap();
    config_for(
        dir.path(),
        receiver.port(),
        "",
        "RepeatWindow = 2s\nMailsPerHour = 100\n",
    );
    let flush_command = || {
        let output = std::process::Command::new(crashmail_exe())
            .args(["outbox", "flush"])
            .env("CRASHMAIL_OUTBOX", outbox.root())
            .env("AXIS_INI", dir.path().join("AXIS.INI"))
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        (output.status.code(), stdout)
    };
    queue_report(&outbox, "the same panic", b"log\n");
    let (code, stdout) = flush_command();
    assert_eq!(code, Some(0), "{stdout}");

    let mut repeats = Vec::new();
    for _ in 0..3 {
        std::thread::sleep(Duration::from_millis(5));
        repeats.push(queue_report(&outbox, "the same panic", b"log\n"));
    }
    let (code, stdout) = flush_command();
    assert_eq!(
        code,
        Some(0),
        "held repeats go by themselves; nothing failed: {stdout}"
    );
    assert!(
        stdout.contains("3 held for a digest or the hourly limit, 0 waiting for a retry"),
        "{stdout}"
    );

    std::thread::sleep(Duration::from_millis(2200));
    let (code, stdout) = flush_command();
    assert_eq!(code, Some(0), "{stdout}");
    let newest = &repeats[2];
    assert!(
        stdout.contains(&format!(
            "sent     {} in the digest of {newest}",
            repeats[0]
        )),
        "the line names the report the email carried: {stdout}"
    );
    assert!(stdout.contains("1 sent (carrying 3 reports)"), "{stdout}");
    let digest = parse_mail(&receiver.messages()[1].data);
    assert_eq!(report_json(&digest)["id"], newest.as_str());
}

#[test]
fn outbox_list_shows_each_states_oldest_crash_first() {
    let dir = tempfile::tempdir().unwrap();
    let outbox = Outbox::open(dir.path().join("outbox")).unwrap();
    let mut ids = Vec::new();
    for crash in ["first crash", "second crash", "third crash"] {
        std::thread::sleep(Duration::from_millis(5));
        ids.push(queue_report(&outbox, crash, b"log\n"));
    }
    // Files touched in the opposite order (a retry rewrites a record, a
    // copy resets times): the crash time decides, not the file's.
    for (age, id) in ids.iter().enumerate() {
        let file = std::fs::File::options()
            .append(true)
            .open(outbox.dir(PENDING).join(format!("{id}.zip")))
            .unwrap();
        file.set_modified(std::time::SystemTime::now() - Duration::from_secs(60 * age as u64))
            .unwrap();
    }
    let table = crashmail::outbox::listing(&outbox).unwrap();
    let position = |crash: &str| table.find(crash).unwrap_or_else(|| panic!("{table}"));
    assert!(
        position("first crash") < position("second crash")
            && position("second crash") < position("third crash"),
        "{table}"
    );
}

#[test]
fn outbox_list_marks_a_cut_reason_and_never_makes_an_outbox() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("outbox");
    let never_made = std::process::Command::new(crashmail_exe())
        .args(["outbox", "list", "--outbox"])
        .arg(&root)
        .output()
        .unwrap();
    assert!(never_made.status.success(), "{never_made:?}");
    assert!(
        String::from_utf8_lossy(&never_made.stdout).contains("does not exist yet"),
        "{never_made:?}"
    );
    assert!(!root.exists(), "listing created the outbox");

    // A file where a folder should be: said, not "does not exist yet".
    let in_the_way = dir.path().join("a-file");
    std::fs::write(&in_the_way, b"x").unwrap();
    let impossible = std::process::Command::new(crashmail_exe())
        .args(["outbox", "list", "--outbox"])
        .arg(in_the_way.join("outbox"))
        .output()
        .unwrap();
    assert_eq!(impossible.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&impossible.stderr)
            .contains(&format!("{} is not a folder", in_the_way.display())),
        "{impossible:?}"
    );

    let outbox = Outbox::open(&root).unwrap();
    let long = format!("order {} could not be booked", "9".repeat(80));
    queue_report(&outbox, &long, b"log\n");
    let table = crashmail::outbox::listing(&outbox).unwrap();
    let row = table.lines().nth(1).unwrap_or_else(|| panic!("{table}"));
    assert!(row.contains("order 999"), "{table}");
    assert!(!row.contains("could not be booked"), "{table}");
    assert!(row.contains('…'), "a cut is marked: {table}");
}

/// A flush without a usable AXIS.INI is a configuration error (10) and
/// leaves the outbox as it was: not even created.
#[test]
fn a_flush_without_axis_ini_exits_10_and_touches_no_outbox() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("outbox");
    let output = std::process::Command::new(crashmail_exe())
        .args(["outbox", "flush", "--outbox"])
        .arg(&root)
        .env("AXIS_INI", dir.path().join("missing.ini"))
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(10), "{output:?}");
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("missing.ini"),
        "{output:?}"
    );
    assert!(!root.exists(), "the flush made the outbox");
}
