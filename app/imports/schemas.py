from typing import Literal

from pydantic import Field

from app.schemas import Schema, Timestamp

ImportState = Literal["queued", "running", "done", "failed"]


class LineError(Schema):
    line: int  # 1-based line number in the upload
    message: str


class Import(Schema):
    id: int
    state: ImportState
    total_lines: int
    processed_lines: int
    imported_count: int
    failed_count: int
    progress: float  # processed / total, 0..1
    error: str | None  # why the whole import failed, if it did
    created_at: Timestamp
    started_at: Timestamp | None
    finished_at: Timestamp | None
    errors: list[LineError] = Field(description="the first lines that were not imported")


class ImportResponse(Schema):
    import_: Import = Field(alias="import")


class LineErrorsResponse(Schema):
    errors: list[LineError]
    errors_count: int
