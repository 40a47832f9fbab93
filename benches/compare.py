#!/usr/bin/env python3
"""Whole-process benchmarks of crashmail beside what users would otherwise
pick, measured on this machine in one run. Prints tables and writes
BENCHMARKS.md (the crash path and triage sections of `cargo bench` are kept
below the generated part).

    python3 benches/compare.py            # installs what it needs (Debian, as root)

Not part of CI: it takes a few minutes and needs Postfix's smtp-sink and
smtp-source, msmtp, swaks and gdb (gcore)."""

import os, re, shutil, socket, statistics, subprocess, sys, tempfile, time, zipfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RUNS = 7


def sh(*args, **kw):
    return subprocess.run(args, check=True, text=True, capture_output=True, **kw).stdout


def install():
    needed = {"smtp-sink": "postfix", "msmtp": "msmtp", "swaks": "swaks", "gcore": "gdb"}
    missing = [pkg for tool, pkg in needed.items() if not shutil.which(tool) and not os.path.exists(f"/usr/sbin/{tool}")]
    if missing:
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        subprocess.run(["apt-get", "update", "-qq"], check=True, env=env)
        subprocess.run(["apt-get", "install", "-y", "-qq", *missing], check=True, env=env)


def tool(name):
    return shutil.which(name) or f"/usr/sbin/{name}"


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def wait_port(port, seconds=10):
    end = time.time() + seconds
    while time.time() < end:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {port}")


def stats(values):
    values = sorted(values)
    return statistics.median(values), values[0], values[-1]


def build():
    subprocess.run(["cargo", "build", "--release", "--quiet"], cwd=ROOT, check=True)
    subprocess.run(["cargo", "build", "--release", "--quiet", "--example", "crashy", "-p", "crashmail-handler"], cwd=ROOT, check=True)
    peer = os.path.join(ROOT, "benches/peers/minidumper-child-startup")
    subprocess.run(["cargo", "build", "--release", "--quiet", "--target-dir", os.path.join(ROOT, "target/peers")], cwd=peer, check=True)
    return (os.path.join(ROOT, "target/release/crashmail"), os.path.join(ROOT, "target/release/examples/crashy"),
            os.path.join(ROOT, "target/peers/release/minidumper-child-startup"))


def write_ini(directory, port):
    ini = os.path.join(directory, "AXIS.INI")
    with open(ini, "w") as f:
        f.write(f"[smtp]\nServer = 127.0.0.1:{port}\nSecurity = none\nDomain = example.com\nTo = support@example.com\n"
                "[report]\nMailsPerHour = 100000\nRepeatWindow = 1s\n")
    return ini


def startup(crashmail, peer):
    ours, theirs = [], []
    for _ in range(RUNS):
        with tempfile.TemporaryDirectory() as d:
            env = dict(os.environ, CRASHMAIL_OUTBOX=os.path.join(d, "outbox"), AXIS_INI=write_ini(d, 1),
                       CRASHMAIL_SAMPLE_TIMING="1")
            err = subprocess.run([crashmail, "sample-app", "exit"], env=env, capture_output=True, text=True).stderr
            ours.append(int(re.search(r"install_us=(\d+)", err).group(1)))
        out = subprocess.run([peer], capture_output=True, text=True).stdout
        theirs.append(int(re.search(r"spawn_us=(\d+)", out).group(1)))
    return stats(ours), stats(theirs)


def receiver(directory):
    """An aiosmtpd server that notes the time each message is accepted."""
    port = free_port()
    stamps = os.path.join(directory, "accepted")
    code = (
        "import time,sys,asyncio\n"
        "from aiosmtpd.controller import Controller\n"
        "class H:\n"
        "  async def handle_DATA(self, server, session, envelope):\n"
        f"    open({stamps!r},'a').write('%f\\n' % time.time()); return '250 OK'\n"
        f"c=Controller(H(), hostname='127.0.0.1', port={port}); c.start()\n"
        "while True: time.sleep(1)\n")
    process = subprocess.Popen([sys.executable, "-c", code])
    wait_port(port)
    return process, port, stamps


def capture(crashy, crashmail):
    """A process with 8 threads and 100 MB of heap segfaults."""
    to_outbox, to_mail, sizes = [], [], []
    for _ in range(RUNS):
        with tempfile.TemporaryDirectory() as d:
            server, port, stamps = receiver(d)
            try:
                outbox = os.path.join(d, "outbox")
                env = dict(os.environ, CRASHMAIL_OUTBOX=outbox, AXIS_INI=write_ini(d, port), CRASHMAIL_WATCHER=crashmail,
                           CRASHY_TIMING="1", CRASHY_LOG=os.path.join(d, "app.log"))
                err = subprocess.run([crashy, "segv-heavy"], env=env, capture_output=True, text=True).stderr
                crashed = int(re.search(r"crash_at_unix_us=(\d+)", err).group(1)) / 1e6
                end = time.time() + 30
                while time.time() < end and not (os.path.exists(stamps) and open(stamps).read().strip()):
                    time.sleep(0.01)
                accepted = float(open(stamps).read().split()[0])
                log = open(os.path.join(outbox, "watcher.log")).read()
                stored = re.search(r"^(\S+) .* stored at ", log, re.M).group(1)
                stored_at = time.mktime(time.strptime(stored[:19], "%Y-%m-%dT%H:%M:%S")) - time.timezone + float("0" + stored[19:-1])
                to_outbox.append((stored_at - crashed) * 1000)
                to_mail.append((accepted - crashed) * 1000)
                sent = os.path.join(outbox, "sent")
                end = time.time() + 10
                while time.time() < end and not [f for f in os.listdir(sent) if f.endswith(".zip")]:
                    time.sleep(0.01)
                zips = [f for f in os.listdir(sent) if f.endswith(".zip")]
                with zipfile.ZipFile(os.path.join(sent, zips[0])) as z:
                    sizes.append((os.path.getsize(os.path.join(sent, zips[0])), sum(i.file_size for i in z.infolist()),
                                  z.getinfo("minidump.dmp").file_size))
            finally:
                server.kill()
    gcore_ms, gcore_sizes = [], []
    for _ in range(RUNS):
        with tempfile.TemporaryDirectory() as d:
            env = dict(os.environ, CRASHY_WITHOUT_CRASHMAIL="1", CRASHY_LOG=os.path.join(d, "app.log"))
            process = subprocess.Popen([crashy, "idle-heavy"], env=env, stdout=subprocess.PIPE, text=True)
            process.stdout.readline()
            started = time.time()
            subprocess.run(["gcore", "-o", os.path.join(d, "core"), str(process.pid)], capture_output=True, check=True)
            gcore_ms.append((time.time() - started) * 1000)
            gcore_sizes.append(os.path.getsize(os.path.join(d, f"core.{process.pid}")))
            process.kill()
            process.wait()
    return stats(to_outbox), stats(to_mail), sizes, stats(gcore_ms), statistics.median(gcore_sizes)


def idle(crashy, crashmail):
    with tempfile.TemporaryDirectory() as d:
        outbox = os.path.join(d, "outbox")
        env = dict(os.environ, CRASHMAIL_OUTBOX=outbox, AXIS_INI=write_ini(d, 1), CRASHMAIL_WATCHER=crashmail,
                   CRASHY_LOG=os.path.join(d, "app.log"))
        process = subprocess.Popen([crashy, "idle"], env=env)
        time.sleep(1.5)
        pid = int(re.search(r"watch\[(\d+)\]", open(os.path.join(outbox, "watcher.log")).read()).group(1))

        def sample():
            # Every thread of the watcher: its IPC loop runs on its own thread.
            switches, cpu = 0, 0
            for task in os.listdir(f"/proc/{pid}/task"):
                status = open(f"/proc/{pid}/task/{task}/status").read()
                stat = open(f"/proc/{pid}/task/{task}/stat").read().rsplit(")", 1)[1].split()
                switches += sum(int(re.search(rf"^{k}:\s+(\d+)", status, re.M).group(1))
                                for k in ("voluntary_ctxt_switches", "nonvoluntary_ctxt_switches"))
                cpu += int(stat[11]) + int(stat[12])
            rss = int(re.search(r"^VmRSS:\s+(\d+)", open(f"/proc/{pid}/status").read(), re.M).group(1)) * 1024
            return time.time(), rss, cpu, switches

        t0, _, cpu0, sw0 = sample()
        time.sleep(5)
        t1, rss, cpu1, sw1 = sample()
        process.wait()
        ticks = os.sysconf("SC_CLK_TCK")
        return rss, (cpu1 - cpu0) / ticks * 1000 / (t1 - t0), (sw1 - sw0) / (t1 - t0)


def message_file(directory):
    body = "".join(chr(32 + (i * 7919) % 94) if i % 76 else "\n" for i in range(50 * 1024))
    path = os.path.join(directory, "message.eml")
    with open(path, "w") as f:
        f.write("From: crashmail@example.com\nTo: support@example.com\nSubject: bench\n\n" + body)
    return path


def delivery():
    results = {}
    with tempfile.TemporaryDirectory() as d:
        port = free_port()
        as_root = ["-u", "nobody"] if os.geteuid() == 0 else []
        sink = subprocess.Popen([tool("smtp-sink"), *as_root, "-c", f"127.0.0.1:{port}", "1000"], stdout=subprocess.DEVNULL)
        wait_port(port)
        try:
            out = subprocess.run(["cargo", "bench", "--quiet", "--bench", "delivery"], cwd=ROOT, capture_output=True, text=True,
                                 env=dict(os.environ, BENCH_SMTP_PORT=str(port), BENCH_REPORTS="1000")).stdout
            results["crashmail outbox flush (1,000 reports)"] = float(re.search(r"rate=([\d.]+)", out).group(1))
            message = message_file(d)
            count = 100
            started = time.time()
            for _ in range(count):
                with open(message) as m:
                    subprocess.run(["msmtp", "--host=127.0.0.1", f"--port={port}", "--auth=off", "--tls=off",
                                    "--from=crashmail@example.com", "support@example.com"], stdin=m, check=True)
            results["msmtp, one process per message (100)"] = count / (time.time() - started)
            count = 50
            started = time.time()
            for _ in range(count):
                subprocess.run(["swaks", "--server", f"127.0.0.1:{port}", "--from", "crashmail@example.com", "--to",
                                "support@example.com", "--data", message, "--silent", "2"], check=True, capture_output=True)
            results["swaks, one process per message (50)"] = count / (time.time() - started)
            started = time.time()
            subprocess.run([tool("smtp-source"), "-s", "1", "-m", "1000", "-l", str(50 * 1024), "-f", "crashmail@example.com",
                            "-t", "support@example.com", f"127.0.0.1:{port}"], check=True, capture_output=True)
            results["smtp-source, the ceiling (1,000)"] = 1000 / (time.time() - started)
        finally:
            sink.kill()
    return results


def main():
    if os.geteuid() == 0:
        install()
    crashmail, crashy, peer = build()
    print("start-up ...", flush=True)
    (ours, theirs) = startup(crashmail, peer)
    print("capture ...", flush=True)
    outbox_ms, mail_ms, sizes, gcore_ms, gcore_size = capture(crashy, crashmail)
    print("idle ...", flush=True)
    rss, cpu_ms_per_s, wakeups = idle(crashy, crashmail)
    print("delivery ...", flush=True)
    rates = delivery()

    zip_size = statistics.median(s[0] for s in sizes)
    raw_size = statistics.median(s[1] for s in sizes)
    dump_size = statistics.median(s[2] for s in sizes)
    flush = rates["crashmail outbox flush (1,000 reports)"]
    lines = [
        "## Side by side (benches/compare.py)", "",
        f"Measured by `python3 benches/compare.py` on this machine in one run ({os.cpu_count()} cores), release builds, {RUNS} runs where repeated; median (min–max).", "",
        "### Start-up cost", "",
        "| | median | min | max |", "|---|---|---|---|",
        f"| crashmail `install()` | {ours[0]} µs | {ours[1]} µs | {ours[2]} µs |",
        f"| minidumper-child `spawn()` | {theirs[0]} µs | {theirs[1]} µs | {theirs[2]} µs |",
        f"| ratio | {theirs[0] / max(ours[0], 1):.1f}× faster | | |", "",
        "### Capture: 8 threads and 100 MB of heap, SIGSEGV", "",
        "| | median | min | max |", "|---|---|---|---|",
        f"| crash → report in the outbox | {outbox_ms[0]:.1f} ms | {outbox_ms[1]:.1f} ms | {outbox_ms[2]:.1f} ms |",
        f"| crash → email accepted (aiosmtpd on loopback) | {mail_ms[0]:.1f} ms | {mail_ms[1]:.1f} ms | {mail_ms[2]:.1f} ms |",
        f"| gcore of the same process | {gcore_ms[0]:.1f} ms | {gcore_ms[1]:.1f} ms | {gcore_ms[2]:.1f} ms |", "",
        f"Sizes: the report zip {zip_size / 1024:.0f} KiB (its files {raw_size / 1024:.0f} KiB raw, the minidump {dump_size / 1024:.0f} KiB); gcore's core {gcore_size / 1048576:.0f} MiB.", "",
        "### Idle cost of the watcher (5 s while the application runs)", "",
        "| resident memory | CPU | wake-ups |", "|---|---|---|",
        f"| {rss / 1048576:.1f} MiB | {cpu_ms_per_s:.2f} ms per second | {wakeups:.0f} per second |", "",
        "Counted over all of the watcher's threads (context switches). Each thread waits in a blocking call "
        "(accept, read, a channel) until the application speaks: nothing polls.", "",
        "### Delivery throughput, 50 KB messages into Postfix's smtp-sink on loopback", "",
        "| sender | messages per second | crashmail's flush is |", "|---|---|---|",
    ]
    for name, rate in rates.items():
        if name.startswith("crashmail"):
            ratio = ""
        elif flush >= rate:
            ratio = f"{flush / rate:.1f}× faster"
        else:
            ratio = f"{rate / flush:.1f}× slower"
        lines.append(f"| {name} | {rate:.0f} | {ratio} |")
    lines += ["",
              "crashmail's flush sends every report over one SMTP connection, but per report it still claims the report "
              "(a rename and a link to its owner file), reads report.json back from its zip, builds the message (text, HTML, "
              "attachment in base64), writes the delivery record and moves the report (synced once per 64 reports), and "
              "records the mail in the outbox's mailing log under its lock; smtp-source only streams fixed bytes over one "
              "connection.", ""]
    generated = "\n".join(lines)
    print(generated)

    path = os.path.join(ROOT, "BENCHMARKS.md")
    existing = open(path).read() if os.path.exists(path) else "# Benchmarks\n"
    marker = "## Side by side (benches/compare.py)"
    head = existing.split(marker)[0].rstrip() + "\n\n"
    with open(path, "w") as f:
        f.write(head + generated)


if __name__ == "__main__":
    main()
