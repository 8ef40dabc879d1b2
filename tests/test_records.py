import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from zorkppo.errors import UserError
from zorkppo.records import TRAJECTORIES, read_table, write_table


def sample_rows():
    return [
        {
            "episode_id": "random-0000",
            "source": "random",
            "step": i,
            "observation": f"obs {i}",
            "description": "West of House",
            "inventory": "You are empty-handed.",
            "location": "West House",
            "valid_actions": ["north", "south"] if i else [],
            "action": "north",
            "valid_action": "north",
            "reward": i,
            "score": 10 * i,
            "done": i == 2,
            "moves": i + 1,
            "world_hash": "ab" * 16,
        }
        for i in range(3)
    ]


def test_round_trip_preserves_every_column_and_type(tmp_path):
    path = write_table(sample_rows(), tmp_path / "t.parquet", TRAJECTORIES)
    table = read_table(path, TRAJECTORIES)
    assert table.schema.remove_metadata().equals(TRAJECTORIES.arrow)
    assert table.to_pylist() == sample_rows()
    assert pq.read_schema(path).metadata[b"zorkppo.schema"] == b"trajectories/2"


def test_wrong_schema_is_rejected(tmp_path):
    path = tmp_path / "other.parquet"
    pq.write_table(pa.table({"episode_id": ["x"]}), path)
    with pytest.raises(UserError, match="has schema 'no zorkppo schema tag'"):
        read_table(path, TRAJECTORIES)


def test_wrong_version_is_rejected(tmp_path):
    table = pa.Table.from_pylist(sample_rows(), schema=TRAJECTORIES.arrow)
    path = tmp_path / "old.parquet"
    pq.write_table(table.replace_schema_metadata({b"zorkppo.schema": b"trajectories/0"}), path)
    with pytest.raises(UserError, match="expected 'trajectories/2'"):
        read_table(path, TRAJECTORIES)


def test_tagged_file_with_wrong_columns_is_rejected(tmp_path):
    path = tmp_path / "cols.parquet"
    table = pa.table({"episode_id": ["x"]}).replace_schema_metadata(
        {b"zorkppo.schema": b"trajectories/2"}
    )
    pq.write_table(table, path)
    with pytest.raises(UserError, match="columns differ"):
        read_table(path, TRAJECTORIES)


def test_corrupt_file_is_rejected(tmp_path):
    path = tmp_path / "corrupt.parquet"
    path.write_bytes(b"PAR1 this is not parquet")
    with pytest.raises(UserError, match="not a readable Parquet file"):
        read_table(path, TRAJECTORIES)


def test_missing_file_is_rejected(tmp_path):
    with pytest.raises(UserError, match="not found"):
        read_table(tmp_path / "none.parquet", TRAJECTORIES)


def test_failed_write_leaves_nothing_behind(tmp_path):
    rows = sample_rows()
    rows[1]["step"] = "not a number"
    with pytest.raises((pa.ArrowException, TypeError, ValueError)):
        write_table(rows, tmp_path / "t.parquet", TRAJECTORIES)
    assert list(tmp_path.iterdir()) == []
