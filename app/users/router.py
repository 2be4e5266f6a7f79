from fastapi import APIRouter

from app.dependencies import CurrentUser, HashingDep, SessionDep, SettingsDep, StateDep
from app.models import User as UserRow
from app.openapi import error_responses
from app.security import make_token
from app.users import service as users
from app.users.schemas import (
    LoginUserRequest,
    NewUserRequest,
    UpdateUserRequest,
    User,
    UserResponse,
)

router = APIRouter(tags=["User and Authentication"])


def _response(user: UserRow, settings: SettingsDep) -> UserResponse:
    token = make_token(
        user.id,
        secret=settings.jwt_secret,
        ttl_seconds=settings.jwt_ttl_seconds,
        version=user.token_version,
    )
    return UserResponse(
        user=User(
            email=user.email, token=token, username=user.username, bio=user.bio, image=user.image
        )
    )


@router.post("/users", status_code=201, responses=error_responses(409))
async def register(
    body: NewUserRequest, session: SessionDep, hashing: HashingDep, settings: SettingsDep
) -> UserResponse:
    """Register a new user."""
    data = body.user
    user = await users.register(
        session, hashing, username=data.username, email=data.email, password=data.password
    )
    return _response(user, settings)


@router.post("/users/login", responses=error_responses(401))
async def login(body: LoginUserRequest, state: StateDep, session: SessionDep) -> UserResponse:
    """Log in with email and password."""
    user = await users.login(
        state.sessions, session, state.hashing, email=body.user.email, password=body.user.password
    )
    return _response(user, state.settings)


@router.get("/user", responses=error_responses(401))
async def current_user(user: CurrentUser, settings: SettingsDep) -> UserResponse:
    """The logged-in user."""
    return _response(user, settings)


@router.put("/user", responses=error_responses(401, 403, 409))
async def update_user(
    body: UpdateUserRequest,
    user: CurrentUser,
    session: SessionDep,
    hashing: HashingDep,
    settings: SettingsDep,
) -> UserResponse:
    """Update the logged-in user; only the fields sent change. A new email or password needs
    `currentPassword`; a new password revokes the tokens issued before (a new one comes back)."""
    changes = body.user.model_dump(exclude_unset=True, by_alias=False)
    user = await users.update(session, hashing, user=user, changes=changes)
    return _response(user, settings)
