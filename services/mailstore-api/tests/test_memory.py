"""argon2id's 19 MiB buffers are given back: the mailstore pins glibc's mmap threshold at start-up.

With glibc's dynamic threshold, the first freed 19 MiB buffer raised the threshold, and every
later one came from (and stayed in) a worker thread's heap: a burst of logins left the process
tens of MiB larger for good (measured with the POP3 benchmark: 83 MB with the threshold pinned,
163 MB without).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import psutil

MiB = 1024 * 1024


def test_a_burst_of_password_checks_leaves_no_heap_behind(make_mailstore) -> None:
    store = make_mailstore()
    store.start()
    assert store.proc is not None
    proc = psutil.Process(store.proc.pid)
    with store.admin() as admin, store.internal() as internal:
        assert admin.post("/users", json={"username": "mem", "password": "pw-1"}).status_code == 201

        def check(i: int) -> None:  # a wrong password: argon2id every time (no cache)
            r = internal.post("/auth", json={"username": "mem", "password": f"wrong-{i}"})
            assert r.status_code == 200 and r.json()["valid"] is False

        check(0)
        before = proc.memory_info().rss
        with ThreadPoolExecutor(max_workers=8) as pool:
            list(pool.map(check, range(48)))
        after = proc.memory_info().rss
        # the same process (one pid) runs with glibc's huge pages for its mappings
        assert "glibc.malloc.hugetlb=1" in proc.environ().get("GLIBC_TUNABLES", "")
    growth = (after - before) / MiB
    # each thread that hashed would keep a 19 MiB buffer in its heap without the fix
    assert growth < 12, f"RSS grew by {growth:.1f} MiB after 48 argon2id checks"
