"""A loopback, in-memory stand-in for the Hugging Face Hub HTTP API, for upload/download tests.

It answers the requests that ``huggingface_hub`` 2.4 makes for ``create_repo``, ``upload_folder`` /
``upload_file`` / ``create_commit`` (preupload + NDJSON commit, plus ``validate-yaml`` on the
``create_commit`` path), ``repo_info`` / ``model_info``, ``list_repo_tree``, ``get_paths_info``,
``list_repo_refs``, ``create_branch``, ``whoami`` and ``hf_hub_download`` / ``snapshot_download``
(HEAD + GET on ``/{repo_id}/resolve/{revision}/{filename}`` with ``ETag``, ``X-Repo-Commit`` and
``Content-Length``), so that the real client code runs end to end. ``transformers.Trainer.push_to_hub``
only needs ``create_repo(exist_ok=True)`` + ``upload_folder``, both covered.

Storage and upload mode. Every file is stored in memory, per repo and per commit. The preupload answer
is always ``uploadMode: "regular"``: in huggingface_hub 2.4 the upload mode is decided by the *server*
(``_commit_api._fetch_upload_modes``); the client never forces LFS/Xet by file name or size (it only
forces "regular" for empty files), so ``model.safetensors`` is sent inline, base64 in the NDJSON
commit. (The real Hub answers "lfs" for ``*.safetensors``; with ``hf_xet`` installed the client would
then upload through a Xet CAS server, which this stand-in does not implement: it answers Xet token
requests with 501 and ``lfsFile`` commit lines whose content it has not seen with 400.)

Pointing the client at the server (``HF_ENDPOINT`` is read once, when ``huggingface_hub.constants`` is
imported, and copied into a few module-level objects):

* in another process: ``subprocess.run(..., env=server.client_env())`` (sets ``HF_ENDPOINT``, unsets
  ``HF_HUB_OFFLINE``/``TRANSFORMERS_OFFLINE``, disables telemetry, isolates ``HF_HOME``);
* in this process: ``with use_hub(server.endpoint): ...`` patches ``constants.ENDPOINT``,
  ``constants.HUGGINGFACE_CO_URL_TEMPLATE`` (used by ``hf_hub_url``), ``constants.HF_HUB_OFFLINE``
  (read by ``is_offline_mode()`` at request time), ``constants.HF_HUB_DISABLE_TELEMETRY`` (else the
  user-agent code fetches ``/api/agent-harnesses``), the endpoint of the module-level ``HfApi`` behind
  ``huggingface_hub.create_repo`` & co, and resets ``transformers.utils.hub._hf_api`` (the cached
  ``HfApi`` that ``Trainer.push_to_hub`` uses) before and after. Everything is restored on exit.
  ``HfApi(endpoint=server.endpoint)`` and ``hf_hub_download(..., endpoint=server.endpoint)`` work without
  any patching, except for the offline flag.

Tokens. Write requests need ``Authorization: Bearer <token>`` with a token accepted by the server (any
``hf_...`` string by default, or exactly ``valid_tokens``); every Authorization value received is kept
in ``server.authorizations`` so tests can check what was sent. The server never logs anything.

Lifetime. The server runs in a daemon thread bound to ``127.0.0.1`` on a free port and is shut down when
the ``hub_server()`` context exits, or after ``max_lifetime`` seconds at the latest.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as _dt
import hashlib
import json
import os
import re
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlsplit

import yaml

REPO_TYPES = {"models": "model", "datasets": "dataset", "spaces": "space", "kernels": "kernel"}
REPO_ACTIONS = {
    "revision",
    "tree",
    "preupload",
    "commit",
    "paths-info",
    "branch",
    "refs",
    "xet-write-token",
    "xet-read-token",
    "lfs-files",
    "commits",
    "tag",
    "settings",
    "discussions",
}
_REPO_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)?$")


def git_blob_sha1(data: bytes) -> str:
    """The git object id of a blob (what the Hub uses as ETag / oid of a regular file)."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.000Z")


@dataclass
class Commit:
    oid: str
    parent: str | None
    message: str
    files: dict[str, bytes]
    date: str


@dataclass
class Repo:
    repo_id: str
    repo_type: str
    private: bool
    created_at: str
    commits: dict[str, Commit] = field(default_factory=dict)
    refs: dict[str, str] = field(default_factory=dict)  # branch name -> commit oid
    n_prs: int = 0

    def resolve(self, revision: str) -> str | None:
        if revision in self.refs:
            return self.refs[revision]
        if revision in self.commits:
            return revision
        return None


@dataclass
class RecordedRequest:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]  # lower-case names; the Authorization value is replaced by "<set>"
    status: int = 0


class LoopbackHub:
    """The state and the HTTP server; use through :func:`hub_server`."""

    def __init__(self, valid_tokens: set[str] | None = None, user: str = "user"):
        self.valid_tokens = set(valid_tokens) if valid_tokens is not None else None
        self.user = user
        self.repos: dict[tuple[str, str], Repo] = {}
        self.requests: list[RecordedRequest] = []
        self.authorizations: list[str] = []
        self.unhandled: list[str] = []
        self.lock = threading.RLock()
        self._counter = 0
        self.httpd: ThreadingHTTPServer | None = None
        self.endpoint = ""

    # ------------------------------------------------------------------ helpers for tests
    def repo(self, repo_id: str, repo_type: str = "model") -> Repo:
        return self.repos[(repo_type, repo_id)]

    def files(self, repo_id: str, revision: str = "main", repo_type: str = "model") -> dict[str, bytes]:
        """The files of ``repo_id`` at ``revision`` (a copy)."""
        with self.lock:
            repo = self.repo(repo_id, repo_type)
            oid = repo.resolve(revision)
            if oid is None:
                raise KeyError(f"{repo_id} has no revision {revision!r}")
            return dict(repo.commits[oid].files)

    def tokens_seen(self) -> set[str]:
        """Tokens received as ``Authorization: Bearer <token>``."""
        return {a.split(" ", 1)[1] for a in self.authorizations if a.lower().startswith("bearer ")}

    def client_env(self, base: dict[str, str] | None = None, hf_home: str | None = None) -> dict[str, str]:
        """Environment for a subprocess whose huggingface_hub must talk to this server."""
        env = dict(os.environ if base is None else base)
        for k in (
            "HF_HUB_OFFLINE",
            "TRANSFORMERS_OFFLINE",
            "HF_TOKEN",
            "HUGGING_FACE_HUB_TOKEN",
            "HF_HUB_CACHE",
        ):
            env.pop(k, None)
        env.update(
            HF_ENDPOINT=self.endpoint,
            HF_HUB_DISABLE_TELEMETRY="1",
            NO_PROXY="127.0.0.1,localhost",
            no_proxy="127.0.0.1,localhost",
            HF_HUB_DISABLE_PROGRESS_BARS="1",
        )
        if hf_home is not None:
            env["HF_HOME"] = hf_home
        return env

    # ------------------------------------------------------------------ state changes
    def _new_commit(self, repo: Repo, parent: str | None, message: str, files: dict[str, bytes]) -> Commit:
        self._counter += 1
        h = hashlib.sha1(f"{repo.repo_type}/{repo.repo_id}\0{parent}\0{message}\0{self._counter}".encode())
        for path in sorted(files):
            h.update(f"{path}\0{git_blob_sha1(files[path])}\n".encode())
        commit = Commit(h.hexdigest(), parent, message, files, _now())
        repo.commits[commit.oid] = commit
        return commit

    def create_repo(self, repo_id: str, repo_type: str = "model", private: bool = False) -> Repo:
        with self.lock:
            repo = Repo(repo_id, repo_type, private, _now())
            first = self._new_commit(repo, None, "initial commit", {})
            repo.refs["main"] = first.oid
            self.repos[(repo_type, repo_id)] = repo
            return repo


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "LoopbackHub/1.0"
    timeout = 30  # seconds an idle keep-alive connection is kept

    hub: LoopbackHub  # set on the subclass made per server

    # ------------------------------------------------------------------ plumbing
    def log_message(self, format, *args):  # noqa: A002 - never log (requests carry tokens)
        pass

    def _body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().strip().split(b";")[0], 16)
                if size == 0:
                    self.rfile.readline()
                    break
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            return b"".join(chunks)
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n else b""

    def _send(
        self,
        status: int,
        body: bytes = b"",
        headers: dict[str, str] | None = None,
        content_type: str = "application/json",
        length: int | None = None,
    ) -> None:
        self._record.status = status
        self._sent = True
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body) if length is None else length))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD" and body:
            self.wfile.write(body)

    def _json(self, status: int, obj, headers: dict[str, str] | None = None) -> None:
        self._send(status, json.dumps(obj).encode(), headers)

    def _error(self, status: int, message: str, code: str | None = None, headers: dict | None = None) -> None:
        h = {"X-Error-Message": message, **(headers or {})}
        if code:
            h["X-Error-Code"] = code
        self._json(status, {"error": message}, h)

    def _token(self) -> str | None:
        auth = self.headers.get("Authorization")
        if not auth or not auth.lower().startswith("bearer "):
            return None
        return auth.split(" ", 1)[1].strip()

    def _token_ok(self, token: str | None) -> bool:
        if token is None:
            return False
        if self.hub.valid_tokens is not None:
            return token in self.hub.valid_tokens
        return token.startswith("hf_")

    def _require_write(self) -> bool:
        token = self._token()
        if token is None:
            self._error(401, "Invalid username or password.")
            return False
        if not self._token_ok(token):
            self._error(401, "Invalid credentials in Authorization header")
            return False
        return True

    def _get_repo(self, repo_type: str, repo_id: str) -> Repo | None:
        repo = self.hub.repos.get((repo_type, repo_id))
        if repo is None or (repo.private and not self._token_ok(self._token())):
            self._error(404, "Repository not found", "RepoNotFound")
            return None
        return repo

    def _resolve(self, repo: Repo, revision: str) -> str | None:
        oid = repo.resolve(revision)
        if oid is None:
            self._error(404, f"Invalid rev id: {revision}", "RevisionNotFound")
        return oid

    def _handle(self) -> None:
        url = urlsplit(self.path)
        headers = {k.lower(): v for k, v in self.headers.items()}
        if "authorization" in headers:
            self.hub.authorizations.append(headers["authorization"])
            headers["authorization"] = "<set>"
        self._sent = False
        self._record = RecordedRequest(self.command, url.path, parse_qs(url.query), headers)
        self.hub.requests.append(self._record)
        body = self._body() if self.command in ("POST", "PUT", "DELETE", "PATCH") else b""
        try:
            with self.hub.lock:
                self._route(url.path, parse_qs(url.query), body)
        except Exception as e:  # report server bugs to the client instead of hanging it
            if not self._sent:
                self._error(500, f"loopback hub error: {type(e).__name__}: {e}")

    do_GET = do_HEAD = do_POST = do_PUT = do_DELETE = _handle

    # ------------------------------------------------------------------ routing
    def _route(self, path: str, query: dict, body: bytes) -> None:
        segs = [unquote(s) for s in path.strip("/").split("/")] if path.strip("/") else []
        m = self.command
        if segs[:1] == ["api"]:
            rest = segs[1:]
            if rest == ["repos", "create"] and m == "POST":
                return self._create_repo(body)
            if rest == ["repos", "delete"] and m == "DELETE":
                return self._delete_repo(body)
            if rest in (["whoami-v2"], ["whoami"]) and m == "GET":
                return self._whoami()
            if rest == ["validate-yaml"] and m == "POST":
                return self._validate_yaml(body)
            if rest and rest[0] in REPO_TYPES:
                return self._repo_api(REPO_TYPES[rest[0]], rest[1:], query, body)
        elif "resolve" in segs and m in ("GET", "HEAD"):
            i = segs.index("resolve")
            repo_part, tail = segs[:i], segs[i + 1 :]
            repo_type = "model"
            if repo_part and repo_part[0] in REPO_TYPES and len(repo_part) > 1:
                repo_type = REPO_TYPES[repo_part[0]]
                repo_part = repo_part[1:]
            if repo_part and len(tail) >= 2:
                return self._resolve_file(repo_type, "/".join(repo_part), tail[0], "/".join(tail[1:]))
        self.hub.unhandled.append(f"{m} {path}")
        self._error(404, f"loopback hub: {m} {path} is not implemented")

    def _repo_api(self, repo_type: str, segs: list[str], query: dict, body: bytes) -> None:
        if len(segs) >= 3 and segs[2] in REPO_ACTIONS:
            repo_id, action, args = "/".join(segs[:2]), segs[2], segs[3:]
        elif len(segs) >= 2 and segs[1] in REPO_ACTIONS:
            repo_id, action, args = segs[0], segs[1], segs[2:]
        elif 1 <= len(segs) <= 2:
            repo_id, action, args = "/".join(segs), "info", []
        else:
            return self._error(404, "Not found")
        m = self.command
        if action == "info" and m in ("GET", "HEAD"):
            return self._info(repo_type, repo_id, "main", query)
        if action == "revision" and m == "GET" and args:
            return self._info(repo_type, repo_id, "/".join(args), query)
        if action == "tree" and m == "GET" and args:
            return self._tree(repo_type, repo_id, args[0], "/".join(args[1:]), query)
        if action == "paths-info" and m == "POST" and args:
            return self._paths_info(repo_type, repo_id, "/".join(args), body)
        if action == "preupload" and m == "POST" and args:
            return self._preupload(repo_type, repo_id, "/".join(args), body)
        if action == "commit" and m == "POST" and args:
            return self._commit(repo_type, repo_id, "/".join(args), query, body)
        if action == "refs" and m == "GET":
            return self._refs(repo_type, repo_id)
        if action == "branch" and args and m in ("POST", "DELETE"):
            return self._branch(repo_type, repo_id, "/".join(args), body)
        if action in ("xet-write-token", "xet-read-token"):
            return self._error(
                501, "the loopback hub has no Xet storage (it answers preupload with 'regular')"
            )
        self.hub.unhandled.append(f"{m} {self.path}")
        return self._error(404, f"loopback hub: {m} {action} is not implemented")

    # ------------------------------------------------------------------ account / repos
    def _whoami(self) -> None:
        if not self._token_ok(self._token()):
            return self._error(401, "Invalid credentials in Authorization header")
        self._json(
            200,
            {
                "type": "user",
                "id": "0" * 24,
                "name": self.hub.user,
                "fullname": "Loopback User",
                "email": None,
                "orgs": [],
                "isPro": False,
                "canPay": False,
                "auth": {"type": "access_token", "accessToken": {"displayName": "loopback", "role": "write"}},
            },
        )

    def _create_repo(self, body: bytes) -> None:
        if not self._require_write():
            return
        payload = json.loads(body or b"{}")
        name, org = payload.get("name"), payload.get("organization")
        repo_type = payload.get("type") or "model"
        repo_id = f"{org or self.hub.user}/{name}"
        if not name or not _REPO_ID_RE.fullmatch(repo_id) or repo_type not in REPO_TYPES.values():
            return self._error(400, f"Invalid repo name or type: {repo_id!r} ({repo_type})")
        prefix = "" if repo_type == "model" else f"{repo_type}s/"
        url = f"{self.hub.endpoint}/{prefix}{repo_id}"
        if (repo_type, repo_id) in self.hub.repos:
            return self._json(
                409,
                {"error": "You already created this model repo", "url": url},
                {"X-Error-Message": "You already created this model repo"},
            )
        private = payload.get("visibility") == "private" or bool(payload.get("private"))
        repo = self.hub.create_repo(repo_id, repo_type, private)
        self._json(
            200,
            {
                "url": url,
                "name": repo_id,
                "id": hashlib.sha1(repo_id.encode()).hexdigest()[:24],
                "private": repo.private,
            },
        )

    def _delete_repo(self, body: bytes) -> None:
        if not self._require_write():
            return
        payload = json.loads(body or b"{}")
        repo_id = f"{payload.get('organization') or self.hub.user}/{payload.get('name')}"
        key = (payload.get("type") or "model", repo_id)
        if key not in self.hub.repos:
            return self._error(404, "Repository not found", "RepoNotFound")
        del self.hub.repos[key]
        self._json(200, {})

    # ------------------------------------------------------------------ reading
    def _entry(self, path: str, data: bytes) -> dict:
        return {"type": "file", "oid": git_blob_sha1(data), "size": len(data), "path": path}

    def _card_metadata(self, files: dict[str, bytes]) -> dict:
        readme = files.get("README.md")
        if readme is None:
            return {}
        meta, _ = _front_matter(readme.decode("utf-8", "replace"))
        return meta if isinstance(meta, dict) else {}

    def _info(self, repo_type: str, repo_id: str, revision: str, query: dict) -> None:
        repo = self._get_repo(repo_type, repo_id)
        if repo is None:
            return
        oid = self._resolve(repo, revision)
        if oid is None:
            return
        commit = repo.commits[oid]
        blobs = query.get("blobs", ["false"])[0].lower() == "true"
        siblings = []
        for path, data in sorted(commit.files.items()):
            s = {"rfilename": path}
            if blobs:
                s.update(size=len(data), blobId=git_blob_sha1(data))
            siblings.append(s)
        meta = self._card_metadata(commit.files)
        tags = list(meta.get("tags") or []) if isinstance(meta.get("tags"), list) else []
        info = {
            "_id": hashlib.sha1(repo_id.encode()).hexdigest()[:24],
            "id": repo_id,
            "author": repo_id.split("/")[0],
            "sha": oid,
            "lastModified": commit.date,
            "createdAt": repo.created_at,
            "private": repo.private,
            "gated": False,
            "disabled": False,
            "tags": tags,
            "siblings": siblings,
        }
        if repo_type == "model":
            info.update(
                modelId=repo_id,
                downloads=0,
                likes=0,
                library_name=meta.get("library_name"),
                pipeline_tag=meta.get("pipeline_tag"),
            )
            if "model-index" in meta:
                info["model-index"] = meta["model-index"]
        if meta:
            info["cardData"] = meta
        self._json(200, info)

    def _tree(self, repo_type: str, repo_id: str, revision: str, prefix: str, query: dict) -> None:
        repo = self._get_repo(repo_type, repo_id)
        if repo is None or (oid := self._resolve(repo, revision)) is None:
            return
        files = repo.commits[oid].files
        recursive = query.get("recursive", ["false"])[0].lower() == "true"
        base = prefix.strip("/")
        if base and not any(p.startswith(base + "/") for p in files):
            return self._error(404, f"Path {base} does not exist", "EntryNotFound", {"X-Repo-Commit": oid})
        entries, dirs = [], set()
        for path in sorted(files):
            rel = path[len(base) + 1 :] if base else path
            if base and not path.startswith(base + "/"):
                continue
            parts = rel.split("/")
            for i in range(1, len(parts) if recursive else min(2, len(parts))):
                d = "/".join(([base] if base else []) + parts[:i])
                if d not in dirs:
                    dirs.add(d)
                    entries.append(
                        {
                            "type": "directory",
                            "oid": hashlib.sha1(d.encode()).hexdigest(),
                            "size": 0,
                            "path": d,
                        }
                    )
            if recursive or len(parts) == 1:
                entries.append(self._entry(path, files[path]))
        self._json(200, entries)

    def _paths_info(self, repo_type: str, repo_id: str, revision: str, body: bytes) -> None:
        repo = self._get_repo(repo_type, repo_id)
        if repo is None or (oid := self._resolve(repo, revision)) is None:
            return
        ctype = self.headers.get("Content-Type", "")
        if "json" in ctype:
            paths = json.loads(body or b"{}").get("paths", [])
        else:
            paths = parse_qs(body.decode()).get("paths", [])
        files = repo.commits[oid].files
        out = []
        for p in paths:
            p = p.strip("/")
            if p in files:
                out.append(self._entry(p, files[p]))
            elif any(f.startswith(p + "/") for f in files):
                out.append(
                    {"type": "directory", "oid": hashlib.sha1(p.encode()).hexdigest(), "size": 0, "path": p}
                )
        self._json(200, out)

    def _refs(self, repo_type: str, repo_id: str) -> None:
        repo = self._get_repo(repo_type, repo_id)
        if repo is None:
            return
        branches = [
            {"name": n, "ref": f"refs/heads/{n}", "targetCommit": o}
            for n, o in repo.refs.items()
            if not n.startswith("refs/")
        ]
        self._json(200, {"branches": branches, "converts": [], "tags": []})

    def _resolve_file(self, repo_type: str, repo_id: str, revision: str, filename: str) -> None:
        repo = self._get_repo(repo_type, repo_id)
        if repo is None or (oid := self._resolve(repo, revision)) is None:
            return
        files = repo.commits[oid].files
        if filename not in files:
            return self._error(404, "Entry not found", "EntryNotFound", {"X-Repo-Commit": oid})
        data = files[filename]
        headers = {
            "ETag": f'"{git_blob_sha1(data)}"',
            "X-Repo-Commit": oid,
            "Accept-Ranges": "bytes",
            "Content-Disposition": f'inline; filename="{filename.rsplit("/", 1)[-1]}"',
        }
        rng = self.headers.get("Range")
        if rng and (m := re.fullmatch(r"bytes=(\d+)-(\d*)", rng.strip())):
            start = int(m.group(1))
            end = int(m.group(2)) if m.group(2) else len(data) - 1
            if start >= len(data):
                return self._error(
                    416, "Range not satisfiable", headers={"Content-Range": f"bytes */{len(data)}"}
                )
            part = data[start : end + 1]
            headers["Content-Range"] = f"bytes {start}-{start + len(part) - 1}/{len(data)}"
            return self._send(206, part, headers, "application/octet-stream")
        self._send(200, data, headers, "application/octet-stream")

    # ------------------------------------------------------------------ writing
    def _validate_yaml(self, body: bytes) -> None:
        payload = json.loads(body or b"{}")
        errors = _validate_card(payload.get("content", ""))
        if errors:
            return self._json(
                400,
                {"errors": [{"message": e} for e in errors], "warnings": []},
                {"X-Error-Message": "; ".join(errors)},
            )
        self._json(200, {"errors": [], "warnings": []})

    def _preupload(self, repo_type: str, repo_id: str, revision: str, body: bytes) -> None:
        if not self._require_write():
            return
        repo = self._get_repo(repo_type, repo_id)
        if repo is None or (oid := self._resolve(repo, revision)) is None:
            return
        files = repo.commits[oid].files
        out = []
        for f in json.loads(body or b"{}").get("files", []):
            path = f["path"]
            out.append(
                {
                    "path": path,
                    "uploadMode": "regular",
                    "shouldIgnore": False,
                    "oid": git_blob_sha1(files[path]) if path in files else None,
                }
            )
        self._json(200, {"files": out, "commitOid": oid})

    def _commit(self, repo_type: str, repo_id: str, revision: str, query: dict, body: bytes) -> None:
        if not self._require_write():
            return
        repo = self._get_repo(repo_type, repo_id)
        if repo is None:
            return
        create_pr = query.get("create_pr", ["0"])[0] == "1"
        if (head := self._resolve(repo, revision)) is None:
            return
        if revision in repo.commits and revision not in repo.refs:
            return self._error(400, "Cannot commit to a commit id, use a branch", "RevisionNotFound")
        lines = [json.loads(line) for line in body.decode("utf-8").splitlines() if line.strip()]
        header = next((x["value"] for x in lines if x.get("key") == "header"), {})
        if header.get("parentCommit") and header["parentCommit"] != head:
            return self._error(412, "A commit has happened since. Please refresh and try again.")
        files = dict(repo.commits[head].files)
        known = {hashlib.sha256(d).hexdigest(): d for c in repo.commits.values() for d in c.files.values()}
        for item in lines:
            key, value = item.get("key"), item.get("value", {})
            if key == "file":
                content = value.get("content", "")
                enc = value.get("encoding", "utf-8")
                files[value["path"]] = base64.b64decode(content) if enc == "base64" else content.encode()
            elif key == "lfsFile":
                if value.get("oid") not in known:
                    return self._error(
                        400,
                        f"LFS object {value.get('oid')} for {value.get('path')} was never uploaded "
                        "(the loopback hub only accepts regular inline files)",
                    )
                files[value["path"]] = known[value["oid"]]
            elif key == "deletedFile":
                if value["path"] not in files:
                    return self._error(404, "A file with this name doesn't exist", "EntryNotFound")
                del files[value["path"]]
            elif key == "deletedFolder":
                prefix = value["path"].rstrip("/") + "/"
                for p in [p for p in files if p.startswith(prefix)]:
                    del files[p]
            elif key != "header":
                return self._error(400, f"Unknown commit operation {key!r}")
        commit = self.hub._new_commit(repo, head, header.get("summary", ""), files)
        pr_url = None
        if create_pr:
            repo.n_prs += 1
            repo.refs[f"refs/pr/{repo.n_prs}"] = commit.oid
            pr_url = f"{self.hub.endpoint}/{repo_id}/discussions/{repo.n_prs}"
        else:
            repo.refs[revision] = commit.oid
        prefix = "" if repo_type == "model" else f"{repo_type}s/"
        self._json(
            200,
            {
                "success": True,
                "commitOid": commit.oid,
                "commitMessage": commit.message,
                "commitUrl": f"{self.hub.endpoint}/{prefix}{repo_id}/commit/{commit.oid}",
                "hookOutput": "",
                "pullRequestUrl": pr_url,
            },
        )

    def _branch(self, repo_type: str, repo_id: str, branch: str, body: bytes) -> None:
        if not self._require_write():
            return
        repo = self._get_repo(repo_type, repo_id)
        if repo is None:
            return
        if self.command == "DELETE":
            repo.refs.pop(branch, None)
            return self._json(200, {})
        if branch in repo.refs:
            return self._error(409, f"Reference already exists: refs/heads/{branch}")
        start = (json.loads(body or b"{}") or {}).get("startingPoint") or "main"
        if (oid := self._resolve(repo, start)) is None:
            return
        repo.refs[branch] = oid
        self._json(200, {})


def _front_matter(text: str) -> tuple[object, str | None]:
    """(parsed YAML metadata or None, error message or None) of a README."""
    m = re.match(r"^---\s*\n(.*?)\n---\s*(\n|$)", text, re.DOTALL)
    if not m:
        return None, None
    try:
        return yaml.safe_load(m.group(1)), None
    except yaml.YAMLError as e:
        return None, f"Invalid YAML: {e}"


def _validate_card(content: str) -> list[str]:
    """A small subset of the Hub's metadata checks (YAML mapping, repo-id-shaped base_model, model-index list)."""
    meta, err = _front_matter(content)
    if err:
        return [err]
    if meta is None:
        return []
    if not isinstance(meta, dict):
        return ["Metadata must be a YAML mapping"]
    errors = []
    base = meta.get("base_model")
    for b in [base] if isinstance(base, str) else (base or []):
        if not isinstance(b, str) or not _REPO_ID_RE.fullmatch(b) or ".." in b:
            errors.append(f'"base_model" must be a Hub model id, got {b!r}')
    if "model-index" in meta and not isinstance(meta["model-index"], list):
        errors.append('"model-index" must be a list')
    if "tags" in meta and not isinstance(meta["tags"], list):
        errors.append('"tags" must be a list')
    return errors


@contextlib.contextmanager
def hub_server(
    valid_tokens: set[str] | None = None, user: str = "user", max_lifetime: float = 300.0
) -> Iterator[LoopbackHub]:
    """Run a :class:`LoopbackHub` on ``127.0.0.1`` (free port) for the duration of the ``with`` block."""
    hub = LoopbackHub(valid_tokens, user)
    handler = type("Handler", (_Handler,), {"hub": hub})
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    httpd.daemon_threads = True
    hub.httpd = httpd
    hub.endpoint = f"http://127.0.0.1:{httpd.server_address[1]}"
    thread = threading.Thread(
        target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, name="loopback-hub", daemon=True
    )
    thread.start()
    watchdog = threading.Timer(max_lifetime, httpd.shutdown)
    watchdog.daemon = True
    watchdog.start()
    try:
        yield hub
    finally:
        watchdog.cancel()
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


@contextlib.contextmanager
def use_hub(endpoint: str) -> Iterator[None]:
    """Point this process's huggingface_hub (and transformers' cached ``HfApi``) at ``endpoint``."""
    from huggingface_hub import constants
    from huggingface_hub import hf_api as hf_api_module

    saved = {
        name: getattr(constants, name)
        for name in ("ENDPOINT", "HUGGINGFACE_CO_URL_TEMPLATE", "HF_HUB_OFFLINE", "HF_HUB_DISABLE_TELEMETRY")
    }
    saved_api_endpoint = hf_api_module.api.endpoint

    def reset_transformers_api():
        hub_mod = sys.modules.get("transformers.utils.hub")
        if hub_mod is not None and hasattr(hub_mod, "_hf_api"):
            hub_mod._hf_api = None

    constants.ENDPOINT = endpoint
    constants.HUGGINGFACE_CO_URL_TEMPLATE = endpoint + "/{repo_id}/resolve/{revision}/{filename}"
    constants.HF_HUB_OFFLINE = False
    constants.HF_HUB_DISABLE_TELEMETRY = True
    hf_api_module.api.endpoint = endpoint
    reset_transformers_api()
    try:
        yield
    finally:
        for name, value in saved.items():
            setattr(constants, name, value)
        hf_api_module.api.endpoint = saved_api_endpoint
        reset_transformers_api()
