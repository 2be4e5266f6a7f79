from app.schemas import Profile, Schema


class ProfileResponse(Schema):
    profile: Profile
