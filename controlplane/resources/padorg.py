"""Questions, quota, organization, stats, languages, login and logout of the pads face
(pads-api.md E7-E14, E16, E18-E20)."""

from __future__ import annotations

import falcon

from ..errors import Usage
from ..padface import COOKIE, TOKEN_SCHEME, header_token, ok
from ..services import languages
from ..services.pad_params import rfc3339, text
from .pads import PadsResource


class QuestionCollection(PadsResource):
    def on_get(self, req, resp):
        caller = self.caller(req)
        self.listing(req, resp, "questions", lambda f, a, n: self.face.questions.list(caller, f, a, n))

    def on_post(self, req, resp):
        question, question_id = self.face.questions.create(self.caller(req), self.params(req))
        ok(resp, question, location=f"/api/questions/{question_id}")


class QuestionItem(PadsResource):
    def on_get(self, req, resp, question_id):
        ok(resp, self.face.questions.show(self.caller(req), question_id))

    def on_put(self, req, resp, question_id):
        ok(resp, self.face.questions.update(self.caller(req), question_id, self.params(req)))

    on_patch = on_put

    def on_delete(self, req, resp, question_id):
        self.face.questions.delete(self.caller(req), question_id)
        ok(resp, {})


class OrgQuestions(PadsResource):
    def on_get(self, req, resp):
        caller = self.caller(req)
        self.listing(req, resp, "questions",
                     lambda f, a, n: self.face.questions.list(caller, f, a, n, org=True))


class Quota(PadsResource):
    def on_get(self, req, resp):
        ok(resp, self.face.orgs.quota(self.caller(req)))


class OrganizationItem(PadsResource):
    def on_get(self, req, resp):
        ok(resp, self.face.orgs.organization(self.caller(req)))


class OrgStats(PadsResource):
    def on_get(self, req, resp):
        ok(resp, self.face.orgs.stats(self.caller(req), req.get_param("start_time"), req.get_param("end_time")))


class Languages(PadsResource):
    def on_get(self, req, resp):
        built = set(self.face.images()) if self.face.images else set()
        ok(resp, {"languages": [
            {"id": lang.id, "name": lang.name, "runnable": lang.runnable and lang.image in built,
             "image": lang.image, "file": lang.file, "default_timeout": lang.timeout or None}
            for lang in languages.catalogue()]})


class Login(PadsResource):
    def on_post(self, req, resp):
        params = self.params(req)
        username, password = params.get("username"), params.get("password")
        if not isinstance(username, str) or not isinstance(password, str):
            raise Usage("username and password are required")
        username, password = text(username, "username"), text(password, "password")
        token, expires = self.face.accounts.login(username, password)
        ok(resp, {"value": token, "token": token, "expires_at": rfc3339(expires)})
        resp.set_cookie(COOKIE, token, path="/", http_only=True, same_site="Lax", secure=req.scheme == "https",
                        max_age=self.face.settings.session_ttl)


class Logout(PadsResource):
    def on_post(self, req, resp):
        token = req.get_param("token")
        header = req.get_header("Authorization") or ""
        match = TOKEN_SCHEME.match(header)
        if token is None and match:
            token = header_token(match.group(2))
        if token is None:
            token = (req.get_cookie_values(COOKIE) or [None])[0]
        if not token:
            raise Usage("no token given")
        self.face.accounts.logout(token)
        resp.status = falcon.HTTP_204
        # Falcon drops a zero max_age; clearing needs Max-Age=0 spelled out.
        resp.append_header("Set-Cookie", f"{COOKIE}=; Path=/; Max-Age=0; HttpOnly; SameSite=Lax"
                           + ("; Secure" if req.scheme == "https" else ""))


def add_routes(app: falcon.App, face) -> None:
    app.add_route("/api/questions", QuestionCollection(face))
    app.add_route("/api/questions/{question_id}", QuestionItem(face))
    app.add_route("/api/organization/questions", OrgQuestions(face))
    app.add_route("/api/quota", Quota(face))
    app.add_route("/api/organization", OrganizationItem(face))
    app.add_route("/api/organization/stats", OrgStats(face))
    app.add_route("/api/languages", Languages(face))
    app.add_route("/api/auth/login", Login(face))
    app.add_route("/api/auth/logout", Logout(face))
