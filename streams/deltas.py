"""Delta checkpoints applied to decoded snapshots: base + deltas in order = the whole state.

A checkpoint chain is a whole snapshot (``JoinPartition.snapshot``, ``WindowMerger.snapshot``)
followed by deltas, each what changed since the checkpoint before it. Restoring decodes the
base, applies each delta here to the decoded dict, and hands the result to the usual
``restore``: so there is one restore path, and a chain restores to exactly what a whole
snapshot taken at the last delta restores to (tests/test_checkpoint_deltas.py compares the
two byte for byte). Everything here is plain data in, plain data out.

What a delta holds and why it is enough:

- ``head``: the small parts of the state (watermarks, counters, offsets per source, early
  labels, positions, the merger's progress), whole; they replace the base's.
- keyed parts (window slices, window keys, in-flight predictions, the merger's partials): the
  keys changed since the last checkpoint with their current value, and the keys gone. A slice
  or window key is never made again once gone (its window has closed), so the order keys
  were first made in, which decides the snapshot's byte order, is base order then delta order.
- in-flight predictions are opened, labelled and expired many at a time, and the same id can
  expire and open again between two checkpoints, so their changes are replayed as operations
  in the order they happened, each opened one with its entry as it was when the delta was made.
"""

from __future__ import annotations

from typing import Any

__all__ = ["DELTA_VERSION", "apply_join_delta", "apply_merge_delta"]

#: the delta format both states write (``"delta"`` in each delta)
DELTA_VERSION = 1


def _check(delta: dict[str, Any], kind: str) -> None:
    if delta.get("delta") != DELTA_VERSION:
        raise ValueError(f"unknown {kind} checkpoint delta version {delta.get('delta')!r}")


def apply_join_delta(snapshot: dict[str, Any], delta: dict[str, Any]) -> None:
    """Apply one ``JoinPartition`` delta to a decoded version 3 snapshot, in place."""
    _check(delta, "join")
    head = dict(delta["head"])
    entry_models, labelled_models = head.pop("entry_models"), head.pop("labelled_models")
    snapshot.update(head)

    wkeys = {rec[0]: rec for rec in snapshot["wkeys"]}
    for wid in delta["wkeys_gone"]:
        del wkeys[wid]
    for wid, pids in delta["grown"]:
        wkeys[wid][8].extend(pids)
    for rec in delta["wkeys"]:
        wkeys[rec[0]] = rec
    snapshot["wkeys"] = list(wkeys.values())

    entries: dict[str, dict[str, Any]] = snapshot["entries"]
    labelled = {model: set(pids) for model, pids in snapshot["labelled"].items()}
    for op, model, arg in delta["entries"]:
        if op == "+":
            held = entries.setdefault(model, {})
            for pid, entry in arg.items():
                if entry is not None:
                    held[pid] = entry
        elif op == "L":
            labelled.setdefault(model, set()).update(arg)
        elif op == "-":
            held, done = entries.get(model, {}), labelled.get(model, set())
            for pid in arg:
                held.pop(pid, None)
                done.discard(pid)
        else:
            raise ValueError(f"unknown join checkpoint delta operation {op!r}")
    # the models with state, in the order they got it (a model never loses its dict)
    snapshot["entries"] = {model: entries.get(model, {}) for model in entry_models}
    snapshot["labelled"] = {model: sorted(labelled.get(model, ())) for model in labelled_models}

    slices = {tuple(rec[0]): rec for rec in snapshot["slices"]}
    for skey in delta["slices_gone"]:
        slices.pop(tuple(skey), None)  # made and closed since the last checkpoint: never in it
    for rec in delta["slices"]:
        slices[tuple(rec[0])] = rec
    snapshot["slices"] = list(slices.values())


def apply_merge_delta(snapshot: dict[str, Any], delta: dict[str, Any]) -> None:
    """Apply one ``WindowMerger`` delta to a decoded version 1 snapshot, in place. The head
    carries the evaluator's state only when an evaluation or alert may have changed it."""
    _check(delta, "merge")
    snapshot.update(delta["head"])
    partials = {tuple(key): encoded for key, encoded in snapshot["partials"]}
    ends = {tuple(key): end for key, end in snapshot["ends"]}
    provisional = {tuple(key) for key in snapshot["provisional_done"]}
    for raw in delta["gone"]:
        key = tuple(raw)
        partials.pop(key, None)
        ends.pop(key, None)
        provisional.discard(key)
    for raw, encoded, end, provisional_done in delta["windows"]:
        key = tuple(raw)
        partials[key], ends[key] = encoded, end
        if provisional_done:
            provisional.add(key)
        else:
            provisional.discard(key)
    snapshot["partials"] = [[list(key), encoded] for key, encoded in partials.items()]
    snapshot["ends"] = [[list(key), end] for key, end in ends.items()]
    snapshot["provisional_done"] = sorted(list(key) for key in provisional)
