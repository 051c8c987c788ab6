import os
import sys
import time

from bench import procs


def test_stat_line_with_spaces_and_parens_in_the_command():
    line = "4242 (py (worker) 1) S 1 4242 4242 0 -1 4194560 100 0 0 0 250 75 0 0 20 0 3 0 9 1 2 3"
    assert procs.parse_stat_cpu_ticks(line) == 325


def test_status_rss():
    text = "Name:\tpython\nVmPeak:\t  9000 kB\nVmRSS:\t   4321 kB\nThreads:\t1\n"
    assert procs.parse_status_rss_kib(text) == 4321
    assert procs.parse_status_rss_kib("Name:\tzombie\n") == 0


def test_own_process_has_cpu_time_and_memory():
    assert procs.cpu_seconds(os.getpid()) > 0
    assert procs.rss_bytes(os.getpid()) > 1_000_000


def test_process_set_stops_what_it_started_and_counts_children(tmp_path):
    with procs.ProcessSet(str(tmp_path)) as started:
        parent = started.spawn("tree", [sys.executable, "-c",
                                        "import subprocess, sys, time\n"
                                        "subprocess.Popen(['sleep', '30'])\n"
                                        "print('ready', flush=True)\n"
                                        "time.sleep(30)\n"])
        # The child announces itself once its own child exists: wait for that line, boundedly.
        for _ in range(1000):
            if "ready" in procs.tail(parent.log_path):
                break
            time.sleep(0.01)
        assert len(procs.descendants(parent.pid)) == 2
        assert parent.alive()
    assert not parent.alive()
    assert started.started == []


def test_a_process_that_died_is_reported_with_its_log(tmp_path):
    with procs.ProcessSet(str(tmp_path)) as started:
        dead = started.spawn("dies", [sys.executable, "-c", "import sys; print('boom'); sys.exit(3)"])
        dead.proc.wait(10)
        try:
            dead.check_alive()
        except RuntimeError as exc:
            assert "exited with 3" in str(exc) and "boom" in str(exc)
        else:
            raise AssertionError("check_alive should raise")


def test_busy_ticks_leave_out_idle_and_iowait():
    text = "cpu  100 5 50 1000 40 3 2 1 7 0\ncpu0 1 2 3 4 5 6 7 8 0 0\n"
    assert procs.parse_proc_stat_busy_ticks(text) == 100 + 5 + 50 + 3 + 2 + 1


def test_own_cpu_counts_this_process(tmp_path):
    with procs.ProcessSet(str(tmp_path)) as started:
        assert procs.own_cpu_seconds(started) > 0
