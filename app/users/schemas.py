from typing import Annotated, Self

from pydantic import ConfigDict, Field, StringConstraints, model_validator
from pydantic.json_schema import SkipJsonSchema

from app.schemas import Schema, Storable

Username = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=1, max_length=64, pattern=r"^[\w.\-]+$"),
    Storable,
]
Email = Annotated[
    str,
    StringConstraints(
        strip_whitespace=True, to_lower=True, max_length=254, pattern=r"^[^@\s]+@[^@\s]+$"
    ),
    Storable,
]
Password = Annotated[str, StringConstraints(min_length=8, max_length=256), Storable]
Bio = Annotated[str, StringConstraints(max_length=2000), Storable]
ImageUrl = Annotated[str, StringConstraints(max_length=2000), Storable]


class NewUser(Schema):
    username: Username
    email: Email
    password: Password


class LoginUser(Schema):
    email: Email
    password: Annotated[str, StringConstraints(min_length=1, max_length=256), Storable]


class UpdateUser(Schema):
    """Only the fields present are changed; `image: null` clears the image. A new email or
    password takes `currentPassword` too (not in the RealWorld spec: an extension)."""

    model_config = ConfigDict(json_schema_extra={"minProperties": 1})

    email: Email | SkipJsonSchema[None] = None
    username: Username | SkipJsonSchema[None] = None
    password: Password | SkipJsonSchema[None] = None
    bio: Bio | None = None
    image: ImageUrl | None = None
    current_password: (
        Annotated[
            str,
            StringConstraints(min_length=1, max_length=256),
            Storable,
            Field(description="required to change email or password"),
        ]
        | SkipJsonSchema[None]
    ) = None

    @model_validator(mode="after")
    def _no_null_credentials(self) -> Self:
        for field in ("email", "username", "password", "current_password"):
            if field in self.model_fields_set and getattr(self, field) is None:
                raise ValueError(f"{field} may not be null")
        return self


class NewUserRequest(Schema):
    user: NewUser


class LoginUserRequest(Schema):
    user: LoginUser


class UpdateUserRequest(Schema):
    user: UpdateUser


class User(Schema):
    email: str
    token: str
    username: str
    bio: str
    image: str | None = Field(description="null when the user has set none")


class UserResponse(Schema):
    user: User
