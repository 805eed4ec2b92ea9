"""Queue leases (issue 6): several annotators at once, never served the same item while leased."""

from __future__ import annotations

import multiprocessing
import sqlite3
from pathlib import Path

import pytest

from labeling.annotations import record_annotation, retract_annotation
from labeling.errors import GroundworkError
from labeling.items import add_items
from labeling.leases import (
    lease_item,
    lease_next_items,
    leased_by_others,
    live_leases,
    release_lease,
)
from labeling.projects import create_project, get_project, set_annotations_per_item
from labeling.queue import next_items
from labeling.store import connect


def _project(db, name: str = "mail", items: int = 10, wanted: int = 1):
    project = create_project(db, name, "text", classes=["ham", "spam"])
    with db.atomic():
        add_items(db, project, [{"key": f"{name}-{i}", "content": f"message {i}",
                                 "sha256": f"{name}{i}"} for i in range(items)])
    if wanted > 1:
        set_annotations_per_item(db, project, wanted)
        project = get_project(db, name)
    return project


def _ids(served: list[dict]) -> list[int]:
    return [r["id"] for r in served]


def test_two_users_never_get_the_same_item_while_it_is_leased(db):
    project = _project(db, items=6)
    ann = _ids(lease_next_items(db, project, n=3, user="ann"))
    bob = _ids(lease_next_items(db, project, n=3, user="bob"))
    assert len(set(ann)) == 3 and len(set(bob)) == 3 and not set(ann) & set(bob)
    # Everything open is leased now: carol gets nothing, and is told why.
    assert lease_next_items(db, project, n=1, user="carol") == []
    assert leased_by_others(db, project, "carol") == 6
    assert len(next_items(db, project, n=10)) == 6  # nothing was dropped from the queue
    served = lease_next_items(db, project, n=2, user="ann")
    assert _ids(served) == ann[:2]  # ann's own leases, oldest first
    assert {"id", "key", "reason", "leased_until"} <= set(served[0])


def test_a_users_own_live_lease_comes_back_to_them(db):
    project = _project(db)
    first = lease_next_items(db, project, user="ann")
    assert _ids(lease_next_items(db, project, user="ann")) == _ids(first)  # a reload
    before = live_leases(db, project)[0]["expires_at"]
    again = lease_next_items(db, project, n=2, user="ann")
    assert _ids(again)[0] == _ids(first)[0] and len(set(_ids(again))) == 2
    renewed = {lease["item_id"]: lease["expires_at"] for lease in live_leases(db, project)}
    assert renewed[_ids(first)[0]] >= before
    assert again[0]["reason"] == first[0]["reason"]


def test_an_answer_frees_the_item_and_the_next_one_is_served(db):
    project = _project(db, items=3)
    item = _ids(lease_next_items(db, project, user="ann"))[0]
    record_annotation(db, project, item, "spam", user="ann")  # the lease is left behind
    nxt = _ids(lease_next_items(db, project, user="ann"))
    assert nxt and nxt[0] != item
    assert item not in {lease["item_id"] for lease in live_leases(db, project)}  # cleaned up
    assert release_lease(db, project, nxt[0], "ann") is True
    assert release_lease(db, project, nxt[0], "ann") is False


def test_skipping_releases_the_item_for_others(db):
    project = _project(db, items=2)
    ann = _ids(lease_next_items(db, project, n=2, user="ann"))
    assert lease_next_items(db, project, user="bob") == []
    release_lease(db, project, ann[0], "ann")  # ann skips it
    assert _ids(lease_next_items(db, project, user="bob")) == [ann[0]]
    # ann, asking again without her skipped item, is not handed bob's
    assert _ids(lease_next_items(db, project, user="ann", exclude=[ann[0]])) == [ann[1]]


def test_an_expired_lease_frees_the_item_and_is_cleaned_up(db):
    project = _project(db, items=1)
    item = _ids(lease_next_items(db, project, user="ann", seconds=60))[0]
    assert lease_next_items(db, project, user="bob") == []
    db.execute("UPDATE leases SET expires_at = '2000-01-01T00:00:00.000Z'")
    db.conn.commit()
    assert live_leases(db, project) == []  # expired leases are ignored at once
    assert leased_by_others(db, project, "bob") == 0
    assert _ids(lease_next_items(db, project, user="bob")) == [item]
    rows = db.execute("SELECT user FROM leases").fetchall()
    assert rows == [("bob",)]  # ann's expired row was removed lazily


def test_a_short_lease_runs_out_by_itself(db):
    import time

    project = _project(db, items=1)
    item = _ids(lease_next_items(db, project, user="ann", seconds=0.2))[0]
    assert lease_next_items(db, project, user="bob") == []
    time.sleep(0.3)
    assert _ids(lease_next_items(db, project, user="bob")) == [item]


def test_k_answers_wanted_means_at_most_k_people_hold_an_item(db):
    project = _project(db, items=1, wanted=3)
    holders = [u for u in ("ann", "bob", "carol", "dan")
               if lease_next_items(db, project, user=u)]
    assert holders == ["ann", "bob", "carol"]  # three answers wanted: three leases at most
    assert lease_next_items(db, project, user="dan") == []
    assert leased_by_others(db, project, "dan") == 1
    # One answer in: only two more are wanted, so only two people may hold it.
    record_annotation(db, project, 1, "ham", user="ann")
    release_lease(db, project, 1, "ann")
    assert lease_next_items(db, project, user="dan") == []
    release_lease(db, project, 1, "bob")  # bob skips: one place is free again
    assert _ids(lease_next_items(db, project, user="dan")) == [1]
    assert {lease["user"] for lease in live_leases(db, project)} == {"carol", "dan"}
    # An answer whose lease was never released no longer holds a place.
    record_annotation(db, project, 1, "spam", user="carol")
    assert _ids(lease_next_items(db, project, user="eve")) == []  # dan + 2 answers = 3
    record_annotation(db, project, 1, "spam", user="dan")
    assert lease_next_items(db, project, user="eve") == []  # it has its three answers
    assert live_leases(db, project) == []


def test_k_answers_spread_over_items_and_never_to_someone_who_answered(db):
    project = _project(db, items=3, wanted=2)
    for item in (1, 2, 3):
        record_annotation(db, project, item, "ham", user="ann")
    assert lease_next_items(db, project, n=3, user="ann") == []  # answered them all
    bob = _ids(lease_next_items(db, project, n=3, user="bob"))
    assert sorted(bob) == [1, 2, 3]
    assert lease_next_items(db, project, n=3, user="carol") == []  # one more answer each


def test_undo_puts_the_item_back_on_hold_for_its_annotator(db):
    project = _project(db, items=1)
    item = _ids(lease_next_items(db, project, user="ann"))[0]
    answer = record_annotation(db, project, item, "ham", user="ann")
    release_lease(db, project, item, "ann")
    retract_annotation(db, project, answer)
    lease_item(db, project, item, "ann")
    assert lease_next_items(db, project, user="bob") == []
    assert _ids(lease_next_items(db, project, user="ann")) == [item]


def test_leases_belong_to_their_project(db):
    mail, other = _project(db, "mail", items=1), _project(db, "other", items=1)
    lease_next_items(db, mail, user="ann")
    assert len(lease_next_items(db, other, user="bob")) == 1
    assert leased_by_others(db, other, "carol") == 1 and leased_by_others(db, mail, "bob") == 1


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"n": -1, "user": "ann"}, "n must be a whole number of items, 0 or more: got -1"),
    ({"n": 1.5, "user": "ann"}, "n must be a whole number"),
    ({"n": "2", "user": "ann"}, "n must be a whole number"),
    ({"user": ""}, "no user given"),
    ({"user": "   "}, "no user given"),
    ({"user": None}, "no user given"),
    ({"user": "ann", "seconds": 0}, "a lease lasts more than 0"),
    ({"user": "ann", "seconds": -5}, "a lease lasts more than 0"),
    ({"user": "ann", "seconds": float("nan")}, "a lease lasts more than 0"),
    ({"user": "ann", "seconds": 10**9}, "at most 86400 seconds"),
    ({"user": "ann", "seconds": "soon"}, "is not a number of seconds"),
])
def test_bad_input_is_refused_and_nothing_is_leased(db, kwargs, message):
    project = _project(db)
    with pytest.raises(GroundworkError, match=message):
        lease_next_items(db, project, **kwargs)
    assert db["leases"].count == 0
    assert not db.conn.in_transaction


def test_with_accounts_only_an_account_can_hold_a_lease(db):
    from labeling.users import add_user

    project = _project(db)
    add_user(db, "ann", "annotator", "password1")
    with pytest.raises(GroundworkError, match="unknown user 'ghost'"):
        lease_next_items(db, project, user="ghost")
    assert lease_next_items(db, project, user="ANN")[0]["id"]
    assert [lease["user"] for lease in live_leases(db, project)] == ["ann"]  # as spelled


def test_n_zero_leases_nothing(db):
    project = _project(db)
    assert lease_next_items(db, project, n=0, user="ann") == []
    assert db["leases"].count == 0


# ---- several processes racing on one real SQLite file --------------------------------------


def _racer(data_dir: str, name: str, rounds: int, barrier, out) -> None:
    """Lease one item per round as a fresh person (so no own lease is handed back)."""
    db = connect(data_dir)
    project = get_project(db, "mail")
    got: list[tuple[str, int]] = []
    errors: list[str] = []
    barrier.wait()
    for r in range(rounds):
        try:
            for row in lease_next_items(db, project, n=2, user=f"{name}-{r}"):
                got.append((f"{name}-{r}", row["id"]))
        except (sqlite3.Error, GroundworkError) as exc:
            errors.append(repr(exc))
    out.put({"got": got, "errors": errors})
    db.conn.close()


def _labeler(data_dir: str, name: str, labels: int, barrier, out) -> None:
    """Label as fast as possible the way the page does: lease, answer, release."""
    db = connect(data_dir)
    project = get_project(db, "mail")
    errors: list[str] = []
    barrier.wait()
    for n in range(labels):
        try:
            served = lease_next_items(db, project, user=name)
            if not served:
                break
            record_annotation(db, project, served[0]["id"], "ham", user=name,
                              submission_id=f"{name}-{n}")
            release_lease(db, project, served[0]["id"], name)
        except (sqlite3.Error, GroundworkError) as exc:
            errors.append(repr(exc))
    out.put({"errors": errors})
    db.conn.close()


def _race(target, data_dir: Path, workers: int, count: int) -> list[dict]:
    ctx = multiprocessing.get_context("spawn")
    barrier, out = ctx.Barrier(workers), ctx.Queue()
    procs = [ctx.Process(target=target, args=(str(data_dir), f"p{i}", count, barrier, out))
             for i in range(workers)]
    for p in procs:
        p.start()
    reports = [out.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(30)
    return reports


def test_processes_racing_on_one_store_get_disjoint_items(db, data_dir):
    _project(db, items=200)
    reports = _race(_racer, data_dir, workers=4, count=15)
    assert [e for r in reports for e in r["errors"]] == []
    items = [item for r in reports for _, item in r["got"]]
    assert len(items) == 4 * 15 * 2 and len(set(items)) == len(items)  # no item twice
    assert db["leases"].count == len(items)


def test_processes_labeling_at_once_answer_each_item_once(db, data_dir):
    _project(db, items=300)
    reports = _race(_labeler, data_dir, workers=4, count=25)
    assert [e for r in reports for e in r["errors"]] == []
    per_item = db.execute("SELECT item_id, count(*) FROM annotations GROUP BY item_id "
                          "HAVING count(*) > 1").fetchall()
    assert db["annotations"].count == 100 and per_item == []
    assert db["leases"].count == 0


# ---- the CLI: `groundwork next` leases, `groundwork label` releases -------------------------


def test_cli_next_leases_to_the_user_and_label_releases(db, data_dir, capsys):
    from tests.test_cli import Run

    project = _project(db, items=2)
    gw = Run(data_dir, capsys)
    ann = gw.json("next", "mail", "--user", "ann")
    assert set(ann) == {"items", "leased_by_others"} and len(ann["items"]) == 1
    assert {"id", "key", "reason", "leased_until"} <= set(ann["items"][0])
    bob = gw.json("next", "mail", "--user", "bob", "--lease", "60")["items"]
    assert [i["id"] for i in bob] != [i["id"] for i in ann["items"]]
    again = gw.json("next", "mail", "--user", "ann")["items"]  # ann's own lease, renewed
    assert [i["id"] for i in again] == [i["id"] for i in ann["items"]]
    assert again[0]["leased_until"] >= ann["items"][0]["leased_until"]
    carol = gw.json("next", "mail", "--user", "carol", "--n", "5")
    assert carol == {"items": [], "leased_by_others": 2}
    code, out, err = gw("next", "mail", "--user", "carol")
    assert code == 0 and out == "" and "being labeled by others; try again in a minute" in err
    peek = gw.json("next", "mail", "--user", "carol", "--n", "5", "--no-lease")["items"]
    assert len(peek) == 2  # a look at the queue holds nothing
    assert {lease["user"] for lease in live_leases(db, project)} == {"ann", "bob"}
    gw.json("label", "mail", ann["items"][0]["id"], "ham", "--user", "ann", "--no-refit")
    assert {lease["user"] for lease in live_leases(db, project)} == {"bob"}
    assert gw.json("next", "mail", "--user", "carol")["items"] == []  # answered or held


@pytest.mark.parametrize(("args", "message"), [
    (("--lease", "0"), "a lease lasts more than 0"),
    (("--lease", "-3"), "a lease lasts more than 0"),
    (("--n", "-1"), "n must be a whole number of items, 0 or more: got -1"),
    (("--user", " "), "no user given"),
])
def test_cli_next_refuses_bad_lease_input_in_one_line(db, data_dir, capsys, args, message):
    from tests.test_cli import Run

    _project(db)
    assert message in Run(data_dir, capsys).fails("next", "mail", *args)
    assert db["leases"].count == 0


def test_cli_next_with_accounts_leases_only_to_an_account(db, data_dir, capsys):
    from labeling.users import add_user
    from tests.test_cli import Run

    _project(db)
    add_user(db, "ann", "annotator", "password1")
    gw = Run(data_dir, capsys)
    assert "unknown user 'ghost'" in gw.fails("next", "mail", "--user", "ghost")
    assert len(gw.json("next", "mail", "--user", "ann")["items"]) == 1
