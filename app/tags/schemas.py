from app.schemas import Schema


class TagsResponse(Schema):
    tags: list[str]
