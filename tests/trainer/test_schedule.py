"""The data schedule of W ranks: disjoint seeded shards covering every row once per epoch, the
same number of micro-batches on every rank, and W x batch b = 1 x batch W*b step by step."""

from __future__ import annotations

import itertools

import pytest
from kubetune_crd.spec import HyperparametersSpec
from kubetune_trainer.schedule import Schedule, eval_batches

SHAPES = list(itertools.product([1, 7, 40, 101], [1, 3, 4], [1, 2, 3], [1, 2, 3, 4]))


@pytest.mark.parametrize(("rows", "batch", "accum", "world"), SHAPES)
def test_every_epoch_deals_each_row_to_one_rank_once(
    rows: int, batch: int, accum: int, world: int
) -> None:
    schedule = Schedule(rows, batch, accum, seed=3, world_size=world)
    for epoch in range(2):
        steps = range(epoch * schedule.steps_per_epoch, (epoch + 1) * schedule.steps_per_epoch)
        dealt = {
            rank: [schedule.step_rows(step, {}, rank) for step in steps] for rank in range(world)
        }
        seen = [i for per_step in dealt.values() for micro in per_step for mb in micro for i in mb]
        assert sorted(seen) == list(range(rows))  # disjoint, and together all of them
        # Every rank runs as many micro-batches in each step (empty ones where it ran out).
        for k in range(len(steps)):
            assert len({len(dealt[rank][k]) for rank in range(world)}) == 1
            union = sorted(i for rank in range(world) for mb in dealt[rank][k] for i in mb)
            tokens = list(range(1, rows + 1))
            step = steps[k]
            assert schedule.step_label_tokens(step, {}, tokens) == sum(tokens[i] for i in union)


@pytest.mark.parametrize(("rows", "batch", "accum", "world"), SHAPES)
def test_world_ranks_of_batch_b_train_on_the_batches_of_one_process_of_batch_world_b(
    rows: int, batch: int, accum: int, world: int
) -> None:
    ranks = Schedule(rows, batch, accum, seed=11, world_size=world)
    one = Schedule(rows, batch * world, accum, seed=11)
    assert ranks.steps_per_epoch == one.steps_per_epoch
    assert ranks.effective_batch == one.effective_batch == batch * accum * world
    hp = HyperparametersSpec(epochs=3)
    assert ranks.total_steps(hp) == one.total_steps(hp)
    for step in range(ranks.total_steps(hp)):
        single = one.step_rows(step, {})
        for m, rows_of_one in enumerate(single):
            together = [ranks.step_rows(step, {}, rank)[m] for rank in range(world)]
            assert sorted(i for mb in together for i in mb) == sorted(rows_of_one)


def test_one_process_keeps_the_consecutive_batches_of_its_epoch_order() -> None:
    schedule = Schedule(10, 3, 2, seed=5)
    order = schedule.epoch_order(1)
    assert schedule.step_rows(schedule.steps_per_epoch, {}) == [order[0:3], order[3:6]]
    assert schedule.step_rows(schedule.steps_per_epoch + 1, {}) == [order[6:9], order[9:10]]
    # Same seed and world size: the same shards on a rerun.
    again = Schedule(10, 3, 2, seed=5, world_size=2)
    assert again.step_rows(3, {}, 1) == Schedule(10, 3, 2, seed=5, world_size=2).step_rows(3, {}, 1)


def test_evaluation_shards_cover_the_rows_with_the_same_batch_count() -> None:
    for rows, batch, world in itertools.product([1, 5, 24], [1, 4, 8], [1, 2, 3]):
        per_rank = [eval_batches(rows, batch, rank, world) for rank in range(world)]
        assert len({len(batches) for batches in per_rank}) == 1
        assert sorted(i for batches in per_rank for b in batches for i in b) == list(range(rows))
    assert eval_batches(10, 4) == [range(0, 4), range(4, 8), range(8, 10)]
