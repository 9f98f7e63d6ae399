"""Integrity of served samples: a corrupt member is an error naming shard, member and sample, or a skip.

Every member read is checked against the XXH3-64 checksum its shard index records (format 2 indexes,
``pipeline.shards.index``); a member that fails the check, or that cannot be decoded (format 1 indexes
have no checksums), raises ``CorruptMemberError``. Loaders built with ``on_corrupt="skip"`` leave the
loader sample out of its batch instead (a batch is then smaller, never filled with other values) and
count it in a ``SkipLog``; in DataLoader workers the records travel with the batch under ``SKIP_KEY``
and the loader in the training process adds them to the dataset's log, which the resume state carries.
"""

from __future__ import annotations

from dataclasses import dataclass, field

ON_CORRUPT = ("raise", "skip")
SKIP_KEY = "_skipped"  # batch entry: the records of loader samples left out of it (popped by the loaders)


class CorruptMemberError(ValueError):
    """A shard member whose bytes fail their checksum or cannot be decoded."""

    def __init__(self, shard: str, member: str, key: str, problem: str) -> None:
        self.shard, self.member, self.key, self.problem = shard, member, key, problem
        super().__init__(f"shard {shard}: member {member} of sample {key}: {problem}")

    def record(self) -> dict:
        return {"shard": self.shard, "member": self.member, "key": self.key, "reason": self.problem}


def check_on_corrupt(value: str) -> None:
    if value not in ON_CORRUPT:
        raise ValueError(f"on_corrupt must be one of {ON_CORRUPT}, got {value!r}")


@dataclass
class SkipLog:
    """Loader samples skipped for corrupt members: how many, and which members (each listed once)."""

    skipped: int = 0
    corrupt: list[dict] = field(default_factory=list)

    def note(self, records: list[dict]) -> None:
        self.skipped += len(records)
        seen = {(r["shard"], r["member"]) for r in self.corrupt}
        for record in records:
            member = {k: record[k] for k in ("shard", "member", "key", "reason")}
            if (member["shard"], member["member"]) not in seen:
                seen.add((member["shard"], member["member"]))
                self.corrupt.append(member)

    def to_json(self) -> dict:
        return {"skipped": self.skipped, "corrupt": [dict(r) for r in self.corrupt]}

    @staticmethod
    def from_json(data: dict) -> SkipLog:
        return SkipLog(int(data.get("skipped", 0)), [dict(r) for r in data.get("corrupt", [])])


def take_skips(batch: dict, log: SkipLog) -> dict | None:
    """Move a batch's skip records into ``log``; None when every sample of the batch was skipped."""
    records = batch.pop(SKIP_KEY, None)
    if records:
        log.note(list(records))
    return batch if batch else None
