"""Claims on each storage (the ``storage`` fixture: SQLite, and PostgreSQL where a server is given)."""

import threading

from convmixer.experiments.claims import ClaimTable


def test_a_point_is_claimed_again_only_after_its_holder_gave_up(tmp_path, storage):
    url = storage.for_sweep(tmp_path)
    claims = ClaimTable(url, "study")
    gave_up = set()

    def holder_gave_up(number):
        return number in gave_up

    assert claims.claim("k3-s0", 0, holder_gave_up)
    assert not claims.claim("k3-s0", 1, holder_gave_up)  # trial 0 is running (or done)
    assert claims.claim("k5-s0", 1, holder_gave_up)  # another point is free
    gave_up.add(0)  # trial 0 failed or its worker died
    assert claims.claim("k3-s0", 2, holder_gave_up)
    assert not claims.claim("k3-s0", 3, holder_gave_up)
    latest = claims.latest()
    assert (latest["k3-s0"].attempt, latest["k3-s0"].trial_number) == (1, 2)
    other = ClaimTable(url, "other study")
    assert other.claim("k3-s0", 0, holder_gave_up)  # claims are per study
    other.close()
    claims.close()


def test_of_many_simultaneous_claims_exactly_one_wins(tmp_path, storage):
    url = storage.for_sweep(tmp_path)
    ClaimTable(url, "s").close()
    tables = [ClaimTable(url, "s") for _ in range(8)]  # one engine each, as in separate workers
    start, wins = threading.Barrier(len(tables)), []

    def worker(i):
        start.wait()
        for point in ("a", "b", "c"):
            if tables[i].claim(point, i, lambda number: False):
                wins.append((point, i))

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(len(tables))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(p for p, _ in wins) == ["a", "b", "c"]
    assert {p: c.trial_number for p, c in tables[0].latest().items()} == dict(wins)
    for t in tables:
        t.close()
