"""Users and tokens endpoints: parse, call the service, return what the schema dumps."""

from __future__ import annotations

from typing import Any

from flask.views import MethodView
from flask_jwt_extended import current_user, get_jwt, verify_jwt_in_request
from sqlalchemy import select

from shop.core.auth import admin_required, auth
from shop.core.pagination import PAGINATE, page_of
from shop.infra.api import Blueprint
from shop.infra.ratelimit import account_limit, body_key, credential_limit, rate_limit_key
from shop.users import services, tokens
from shop.users.models import Account, User
from shop.users.names import username_key
from shop.users.schemas import (
    CREDENTIALS_EXAMPLE,
    MANAGE_USER_EXAMPLE,
    PASSWORD_CHANGE_EXAMPLE,
    PROFILE_EXAMPLE,
    REFRESH_EXAMPLE,
    REGISTRATION_EXAMPLE,
    REVOKE_EXAMPLE,
    AdminUserSchema,
    CredentialsSchema,
    ManageUserSchema,
    PasswordChangeSchema,
    ProfileUpdateSchema,
    RefreshSchema,
    RegistrationSchema,
    RevokeSchema,
    StaffUserSchema,
    TokenPairSchema,
    UserSchema,
)

blp = Blueprint(
    "users",
    __name__,
    url_prefix="/api/users",
    description="Accounts: register, read and change your profile and password, log out everywhere; staff list "
    "every account; admins read and manage them.",
)
token_blp = Blueprint(
    "tokens",
    __name__,
    url_prefix="/api/token",
    description="Log in for a JWT pair (access: 15 minutes, refresh: 7 days, a session at most 30 days), refresh it "
    "(the old refresh token is spent; presenting it again ends the session), log out. Send the access token as "
    "`Authorization: Bearer <access>`.",
)


@blp.route("/")
class Users(MethodView):
    # Registration: per client and per email address given (which slows finding out, by the 422 the
    # contract answers for a taken address, which addresses have accounts); the staff list has the usual limit.
    decorators = [
        credential_limit(methods=["POST"]),
        credential_limit(key_func=body_key("email"), methods=["POST"], amount=account_limit),
    ]

    @blp.doc(operationId="registerUser")
    @blp.arguments(RegistrationSchema, example=REGISTRATION_EXAMPLE)
    @blp.response(201, UserSchema)
    @blp.alt_response(429, response="TOO_MANY_REQUESTS")
    def post(self, data: dict[str, Any]) -> User:
        """Register an account"""
        return services.register_user(data)

    @blp.doc(operationId="listUsers")
    @auth(blp, staff=True)
    @blp.response(200, StaffUserSchema(many=True))
    @blp.paginate(**PAGINATE)
    def get(self, pagination_parameters: Any) -> Any:
        """List users (staff), without email or phone number"""
        return page_of(select(User).order_by(User.id), pagination_parameters)


@blp.route("/<int(max=2147483647):user_id>/")
class ManagedUser(MethodView):
    decorators = [admin_required]

    @blp.doc(operationId="readUser")
    @auth(blp, staff=True)
    @blp.response(200, AdminUserSchema)
    @blp.alt_response(404, response="NOT_FOUND")
    def get(self, user_id: int) -> User:
        """Read a user (admin)"""
        return services.get_user(user_id)

    @blp.doc(operationId="manageUser")
    @auth(blp, staff=True)
    @blp.arguments(ManageUserSchema, required=False, example=MANAGE_USER_EXAMPLE)  # no body: nothing changes
    @blp.response(200, AdminUserSchema)
    @blp.alt_response(404, response="NOT_FOUND")
    @blp.alt_response(409, response="CONFLICT", description="The admin's own account")
    def patch(self, changes: dict[str, Any], user_id: int) -> User:
        """Change a user's role, activity or password (admin); deactivation and a new password end their sessions"""
        return services.manage_user(current_user, user_id, changes)


@blp.route("/me/")
class Me(MethodView):
    @blp.doc(operationId="readMyProfile")
    @auth(blp)
    @blp.response(200, UserSchema)
    def get(self) -> Account:
        """Read my profile"""
        return current_user

    @blp.doc(operationId="updateMyProfile")
    @auth(blp)
    @blp.arguments(ProfileUpdateSchema, required=False, example=PROFILE_EXAMPLE)  # no body: nothing changes
    @blp.response(200, UserSchema)
    def patch(self, changes: dict[str, Any]) -> User:
        """Update my profile"""
        return services.update_profile(current_user, changes)


@blp.route("/me/password/")
class MyPassword(MethodView):
    # The old password is checked here too: the same brute-force budget, per user wherever they connect from.
    decorators = [credential_limit(key_func=rate_limit_key)]

    @blp.doc(operationId="changeMyPassword")
    @auth(blp)
    @blp.arguments(PasswordChangeSchema, example=PASSWORD_CHANGE_EXAMPLE)
    @blp.response(204)
    @blp.alt_response(429, response="TOO_MANY_REQUESTS")
    def post(self, data: dict[str, Any]) -> None:
        """Change my password"""
        services.change_password(current_user, get_jwt(), data["old_password"], data["new_password"])


@blp.route("/me/sessions/revoke/")
class MySessions(MethodView):
    @blp.doc(operationId="logOutEverywhere")
    @auth(blp)
    @blp.response(204)
    def post(self) -> None:
        """Log out everywhere: end every session of mine, this one included"""
        services.log_out_everywhere(current_user)


@token_blp.route("/")
class Token(MethodView):
    # Per client and per account named: guessing one account's password from many addresses is slow too.
    decorators = [
        credential_limit(),
        credential_limit(key_func=body_key("username", username_key), amount=account_limit),
    ]

    @token_blp.doc(operationId="obtainTokens")
    @token_blp.arguments(CredentialsSchema, example=CREDENTIALS_EXAMPLE)
    @token_blp.response(200, TokenPairSchema)
    @token_blp.alt_response(401, response="UNAUTHORIZED")
    @token_blp.alt_response(429, response="TOO_MANY_REQUESTS")
    def post(self, credentials: dict[str, str]) -> dict[str, str]:
        """Obtain an access and refresh token pair"""
        user = services.authenticate(credentials["username"], credentials["password"])
        return tokens.start_session(user)


@token_blp.route("/refresh/")
class TokenRefresh(MethodView):
    @token_blp.doc(operationId="refreshTokens")
    @token_blp.arguments(RefreshSchema, example=REFRESH_EXAMPLE)
    @token_blp.response(200, TokenPairSchema)
    @token_blp.alt_response(401, response="UNAUTHORIZED")
    def post(self, data: dict[str, str]) -> dict[str, str]:
        """Exchange a refresh token for a new pair; the old refresh token is spent"""
        verify_jwt_in_request(refresh=True, locations=["json"])
        return tokens.rotate(get_jwt())


@token_blp.route("/revoke/")
class TokenRevoke(MethodView):
    @token_blp.doc(operationId="revokeTokens")
    @auth(token_blp)
    @token_blp.arguments(RevokeSchema, required=False, example=REVOKE_EXAMPLE)  # no body: this session only
    @token_blp.response(204)
    def post(self, data: dict[str, str]) -> None:
        """Log out: end this session (its access and refresh tokens), and the given refresh token's"""
        tokens.logout(get_jwt(), data.get("refresh"))
