"""Peer helpers that need no MPI: task batching, static blocks, the row checker."""
import pytest

import mpi_loop
import rows
import tasks


def test_batches_cover_items_in_order():
    items = [str(i) for i in range(10)]
    assert tasks.batches(items, 4) == [items[0:4], items[4:8], items[8:10]]
    with pytest.raises(ValueError):
        tasks.batches(items, 0)


@pytest.mark.parametrize("ntasks,nworkers", [(20, 7), (7, 7), (3, 7), (1000, 3)])
def test_static_blocks_partition_the_tasks(ntasks, nworkers):
    blocks = [mpi_loop.static_block(ntasks, nworkers, w) for w in range(nworkers)]
    assert [i for b in blocks for i in b] == list(range(ntasks))
    assert max(map(len, blocks)) - min(map(len, blocks)) <= 1


def test_row_block_is_whole_fixed_width_rows():
    block = rows.row_block(3, 10_000)
    assert len(block) % rows.ROW_BYTES == 0
    assert all(len(line) == rows.ROW_BYTES - 1 for line in block.decode().splitlines())


def test_check_rows_accepts_intact_and_rejects_damaged_files(tmp_path):
    good = tmp_path / "good.txt"
    good.write_bytes(rows.row_block(1, 5000) * 3)
    rows.check_rows(str(good), good.stat().st_size)
    with pytest.raises(AssertionError, match="expected"):
        rows.check_rows(str(good), good.stat().st_size + rows.ROW_BYTES)
    data = bytearray(good.read_bytes())
    data[rows.ROW_BYTES - 1] = ord("x")  # two rows merged
    bad = tmp_path / "bad.txt"
    bad.write_bytes(bytes(data))
    with pytest.raises(AssertionError, match="merged"):
        rows.check_rows(str(bad), len(data))
