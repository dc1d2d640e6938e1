"""Fixed-width result rows for the output-path workload, and a check that a file is intact."""
import numpy as np

ROW_BYTES = 100


def row_block(writer: int, block_bytes: int) -> bytes:
    """``block_bytes`` (rounded down to whole rows) of newline-terminated rows from one writer."""
    nrows = max(1, block_bytes // ROW_BYTES)
    head = f"w{writer:03d},"
    rows = []
    for i in range(nrows):
        row = f"{head}{i:09d},"
        rows.append(row + "x" * (ROW_BYTES - len(row) - 1) + "\n")
    return "".join(rows).encode()


def check_rows(path: str, expected_bytes: int, chunk_rows: int = 1 << 18) -> None:
    """Raise if the file is not exactly ``expected_bytes`` of whole, unmerged rows."""
    with open(path, "rb") as fh:
        size = 0
        while data := fh.read(chunk_rows * ROW_BYTES):
            if len(data) % ROW_BYTES:
                raise AssertionError(f"{path}: file size is not a whole number of rows")
            arr = np.frombuffer(data, dtype=np.uint8).reshape(-1, ROW_BYTES)
            if not (arr[:, -1] == ord("\n")).all() or (arr[:, :-1] == ord("\n")).any():
                raise AssertionError(f"{path}: rows merged or split near byte {size}")
            size += len(data)
    if size != expected_bytes:
        raise AssertionError(f"{path}: {size} bytes written, expected {expected_bytes}")
