from typing import Annotated

from pydantic import StringConstraints

from app.schemas import Profile, Schema, Storable, Timestamp


class NewComment(Schema):
    body: Annotated[str, StringConstraints(min_length=1, max_length=20_000), Storable]


class NewCommentRequest(Schema):
    comment: NewComment


class Comment(Schema):
    id: int
    created_at: Timestamp
    updated_at: Timestamp
    body: str
    author: Profile


class SingleCommentResponse(Schema):
    comment: Comment


class MultipleCommentsResponse(Schema):
    comments: list[Comment]
