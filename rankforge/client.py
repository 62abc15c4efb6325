"""`Rankforge(url, token)`: the Python client of the Rankforge API (httpx only; never imports the app).

    rf = Rankforge("http://localhost:8000", token="...")
    project = rf.projects.create("Helpfulness", mode="pairwise", overlap=3)
    rf.projects.import_records(project, [{"prompt": "Hi?", "completions": [{"text": "a"}, {"text": "b"}]}])
    dataset = rf.datasets.wait(rf.datasets.create(project, format="pairs"))
    df = rf.datasets.to_pandas(dataset)
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import random
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import httpx

from rankforge.errors import ConnectionFailed, JobFailedError, RankforgeError, WaitTimeout, error_for
from rankforge.types import (
    Dataset,
    ImportResult,
    Job,
    Judgment,
    Leaderboard,
    ModelVersion,
    Project,
    Task,
    Webhook,
)

IDEMPOTENT = frozenset({"GET", "HEAD", "PUT", "DELETE", "OPTIONS"})
RETRY_STATUSES = frozenset({429, 502, 503, 504})
TERMINAL = ("succeeded", "failed", "cancelled")


def _ref(obj: Any) -> str:
    """A project, dataset, job or model given as an object, a dict, an id or (projects, models) a name."""
    if isinstance(obj, dict):
        obj = obj["id"]
    elif hasattr(obj, "id") and not isinstance(obj, str | int):
        obj = obj.id
    return str(obj)


def _progress_bar(total: float, desc: str, enabled: bool):
    """A tqdm bar when tqdm is installed (notebooks get the widget), else a no-op."""
    if not enabled:
        return None
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return None
    return tqdm(total=total, desc=desc, unit="%", bar_format="{desc}: {percentage:3.0f}%|{bar}| {postfix}")


class Rankforge:
    """A Rankforge server. `token` defaults to $RANKFORGE_TOKEN, `url` to $RANKFORGE_URL.

    Idempotent calls (GET, PUT, DELETE) are retried with exponential backoff on 429, 502, 503, 504 and
    connection errors (honouring Retry-After); a POST or PATCH is retried only when the connection could not
    be made at all (nothing was sent). List calls page through everything."""

    def __init__(self, url: str | None = None, token: str | None = None, *, timeout: float = 60.0,
                 max_retries: int = 4, backoff: float = 0.5, page_size: int = 100,
                 transport: httpx.BaseTransport | None = None):  # fmt: skip
        url = url or os.environ.get("RANKFORGE_URL") or "http://127.0.0.1:8000"
        token = token or os.environ.get("RANKFORGE_TOKEN")
        headers = {"Accept": "application/json", "User-Agent": "rankforge-python"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        self.url = url.rstrip("/")
        self.max_retries, self.backoff, self.page_size = max_retries, backoff, page_size
        self._http = httpx.Client(base_url=self.url + "/api/v1", headers=headers, timeout=timeout,
                                  transport=transport)  # fmt: skip
        self.projects = Projects(self)
        self.tasks = Tasks(self)
        self.datasets = Datasets(self)
        self.jobs = Jobs(self)
        self.models = Models(self)
        self.webhooks = Webhooks(self)
        self.rounds = Rounds(self)

    # --- plumbing ------------------------------------------------------------------------------------------------
    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Rankforge:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _sleep_before_retry(self, attempt: int, response: httpx.Response | None) -> None:
        delay = self.backoff * 2**attempt * (1 + random.random() * 0.25)
        if response is not None and response.headers.get("retry-after", "").isdigit():
            delay = max(delay, float(response.headers["retry-after"]))
        time.sleep(min(delay, 60.0))

    def request(self, method: str, path: str, *, stream: bool = False, **kwargs) -> httpx.Response:
        """One API call with retries; raises an `APIError` subclass for an error answer."""
        method = method.upper()
        idempotent = method in IDEMPOTENT
        attempt = 0
        while True:
            try:
                request = self._http.build_request(method, path, **kwargs)
                response = self._http.send(request, stream=stream)
            except httpx.TransportError as error:
                unsent = isinstance(error, httpx.ConnectError | httpx.ConnectTimeout)
                if attempt < self.max_retries and (idempotent or unsent):
                    self._sleep_before_retry(attempt, None)
                    attempt += 1
                    continue
                raise ConnectionFailed(f"{method} {self.url}/api/v1{path}: {error}") from error
            if response.status_code in RETRY_STATUSES and idempotent and attempt < self.max_retries:
                response.close()
                self._sleep_before_retry(attempt, response)
                attempt += 1
                continue
            if response.status_code >= 400:
                if stream:
                    response.read()
                try:
                    detail = response.json().get("detail", response.text)
                except (ValueError, AttributeError):
                    detail = response.text
                raise error_for(response.status_code, detail, method=method, url=str(request.url))
            return response

    def _json(self, method: str, path: str, **kwargs) -> Any:
        response = self.request(method, path, **kwargs)
        return None if response.status_code == 204 or not response.content else response.json()

    def _paged(self, path: str, params: dict | None = None, page_size: int | None = None) -> Iterator[dict]:
        """Every item of a list endpoint, page by page (`limit`/`offset`)."""
        size = page_size or self.page_size
        offset = 0
        while True:
            page = self._json("GET", path, params={**(params or {}), "limit": size, "offset": offset})
            yield from page
            if len(page) < size:
                return
            offset += size

    def health(self) -> dict:
        return httpx.get(self.url + "/healthz", timeout=10).json()

    # --- shortcuts ------------------------------------------------------------------------------------------------
    def import_data(self, project, data, **kwargs) -> ImportResult:
        """Import a file path, a list of dicts, a pandas DataFrame or an HF `datasets.Dataset` (native format
        rows unless `format=` says otherwise)."""
        return self.projects.import_data(project, data, **kwargs)


class _Resource:
    def __init__(self, client: Rankforge):
        self._c = client


class Projects(_Resource):
    def create(self, name: str, *, slug: str | None = None, mode: str = "pairwise", overlap: int = 1,
               guidelines: str = "", attributes: list[dict] | None = None, **fields) -> Project:  # fmt: skip
        """A new project (admin). `attributes`: scales like `{"name": "helpful", "min": 1, "max": 7}`."""
        body = {"name": name, "slug": slug, "mode": mode, "overlap": overlap, "guidelines": guidelines,
                "attributes": attributes or []} | fields  # fmt: skip
        return Project(**self._c._json("POST", "/projects", json={k: v for k, v in body.items() if v is not None}))

    def list(self, *, page_size: int | None = None) -> list[Project]:
        return [Project(**p) for p in self._c._paged("/projects", page_size=page_size)]

    def get(self, project) -> Project:
        return Project(**self._c._json("GET", f"/projects/{_ref(project)}"))

    def update(self, project, **changes) -> Project:
        """Change settings (admin): overlap, guidelines (a new version when the text changes), status, ..."""
        return Project(**self._c._json("PATCH", f"/projects/{_ref(project)}", json=changes))

    def stats(self, project) -> dict:
        return self._c._json("GET", f"/projects/{_ref(project)}/stats")

    def leaderboard(self, project) -> Leaderboard:
        return Leaderboard(**self._c._json("GET", f"/projects/{_ref(project)}/leaderboard"))

    def import_file(self, project, path: str | os.PathLike, *, format: str = "native",
                    gold: bool = False) -> ImportResult:  # fmt: skip
        """Upload a JSONL file (native, trl, hh-rlhf or oasst)."""
        with open(path, "rb") as handle:
            answer = self._c._json("POST", f"/projects/{_ref(project)}/import",
                                   params={"format": format, "gold": str(gold).lower()},
                                   files={"file": (Path(path).name, handle, "application/x-ndjson")})  # fmt: skip
        return ImportResult(**answer)

    def import_records(self, project, records: Iterable[dict], *, format: str = "native",
                       gold: bool = False) -> ImportResult:  # fmt: skip
        """Import rows given as dicts (one JSON object a line on the wire)."""
        body = io.BytesIO()
        for record in records:
            body.write(json.dumps(record, ensure_ascii=False, default=str).encode() + b"\n")
        answer = self._c._json("POST", f"/projects/{_ref(project)}/import", content=body.getvalue(),
                               params={"format": format, "gold": str(gold).lower()},
                               headers={"Content-Type": "application/x-ndjson"})  # fmt: skip
        return ImportResult(**answer)

    def import_data(self, project, data, *, format: str = "native", gold: bool = False) -> ImportResult:
        """A path, a list of dicts, a pandas DataFrame or an HF `datasets.Dataset`."""
        if isinstance(data, str | os.PathLike):
            return self.import_file(project, data, format=format, gold=gold)
        if hasattr(data, "to_dict") and hasattr(data, "columns"):  # pandas.DataFrame
            data = data.to_dict(orient="records")
        elif hasattr(data, "to_list") and hasattr(data, "features"):  # datasets.Dataset
            data = data.to_list()
        return self.import_records(project, data, format=format, gold=gold)

    def judges(self, project) -> Any:
        """The project's AI judges (`GET /api/v1/projects/{id}/judges`), on servers that have them."""
        return self._c._json("GET", f"/projects/{_ref(project)}/judges")

    def members(self, project) -> list[str]:
        """Usernames of the project's members (admin)."""
        return self._c._json("GET", f"/projects/{_ref(project)}/members")["usernames"]

    def set_members(self, project, usernames: list[str], *, members_only: bool | None = None) -> list[str]:
        """Replace the members (admin); `members_only=True` also restricts rating to them."""
        body: dict[str, Any] = {"usernames": list(usernames)}
        if members_only is not None:
            body["members_only"] = members_only
        return self._c._json("PUT", f"/projects/{_ref(project)}/members", json=body)["usernames"]


class Tasks(_Resource):
    """The rating loop through the API (scripted raters, tests)."""

    def next(self, project) -> Task | None:
        """The next task `{assignment_id, comparison_id, prompt, options, expires_at}`, or None when done."""
        task = self._c._json("GET", f"/projects/{_ref(project)}/tasks/next")
        return None if task is None else Task(**task)

    def submit(self, assignment_id: int, ranking: list[list[int]], **fields) -> Judgment:
        """A judgment: `ranking` is tie groups of option ids, best first; also attributes, rationale, flags."""
        return Judgment(**self._c._json("POST", f"/assignments/{assignment_id}/judgment",
                                        json={"ranking": ranking} | fields))  # fmt: skip

    def skip(self, assignment_id: int, reason: str = "") -> dict:
        return self._c._json("POST", f"/assignments/{assignment_id}/skip", json={"reason": reason})


class Datasets(_Resource):
    def create(self, project, *, format: str = "pairs", filters: dict | None = None, split: dict | None = None,
               **options) -> Dataset:  # fmt: skip
        """Start an export (a snapshot, built by a worker); `wait` for it."""
        body = {"format": format} | ({"filters": filters} if filters else {}) | ({"split": split} if split else {})
        return Dataset(**self._c._json("POST", f"/projects/{_ref(project)}/datasets", json=body | options))

    def get(self, dataset) -> Dataset:
        return Dataset(**self._c._json("GET", f"/datasets/{_ref(dataset)}"))

    def list(self, project=None, *, page_size: int | None = None) -> list[Dataset]:
        params = {"project_id": int(self._c.projects.get(project).id)} if project is not None else {}
        return [Dataset(**d) for d in self._c._paged("/datasets", params, page_size)]

    def wait(self, dataset, *, timeout: float | None = None, poll: float = 1.0, progress: bool = True) -> Dataset:
        """Until the snapshot is ready (a progress bar from its export job); raises `JobFailedError` if it fails."""
        snapshot = self.get(dataset)
        if snapshot.status == "building" and snapshot.job_id:
            self._c.jobs.wait(snapshot.job_id, timeout=timeout, poll=poll, progress=progress, raise_on_failure=False)
        deadline = None if timeout is None else time.monotonic() + timeout
        while (snapshot := self.get(dataset)).status == "building":
            if deadline is not None and time.monotonic() > deadline:
                raise WaitTimeout(f"Dataset {snapshot.id} is still building after {timeout} s.")
            time.sleep(poll)
        if snapshot.status != "ready":
            raise JobFailedError(snapshot, f"Dataset {snapshot.id} {snapshot.status}: {snapshot.error}")
        return snapshot

    def download_file(self, dataset, name: str, target: str | os.PathLike) -> Path:
        target = Path(target)
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(f".{target.name}.partial")
        response = self._c.request("GET", f"/datasets/{_ref(dataset)}/files/{name}", stream=True)
        try:
            with open(partial, "wb") as handle:
                for chunk in response.iter_bytes(1 << 20):
                    handle.write(chunk)
        finally:
            response.close()
        partial.replace(target)
        return target

    def download(self, dataset, folder: str | os.PathLike) -> Path:
        """Every file of a ready snapshot into `folder`, checked against the manifest's sha256 when the
        server serves `manifest.json`. Returns the folder."""
        snapshot = self.get(dataset)
        if snapshot.status != "ready":
            raise RankforgeError(f"Dataset {snapshot.id} is {snapshot.status}; wait for it first.")
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        for name in snapshot.files:
            self.download_file(snapshot, name, folder / name)
        manifest = {}
        with contextlib.suppress(RankforgeError):  # an older server may not serve it
            manifest = json.loads(self.download_file(snapshot, "manifest.json", folder / "manifest.json").read_text())
        for name, entry in (manifest.get("files") or {}).items():
            path = folder / name
            if path.is_file() and isinstance(entry, dict) and entry.get("sha256"):
                digest = hashlib.sha256(path.read_bytes()).hexdigest()
                if digest != entry["sha256"]:
                    raise RankforgeError(f"{name}: sha256 {digest} does not match the manifest's {entry['sha256']}.")
        return folder

    def _local(self, dataset, cache_dir: str | os.PathLike | None) -> tuple[Dataset, Path]:
        snapshot = self.get(dataset)
        root = Path(cache_dir or os.environ.get("RANKFORGE_CACHE") or Path.home() / ".cache" / "rankforge")
        folder = root / "datasets" / f"{snapshot.id}-{(snapshot.sha256 or 'nohash')[:16]}"
        if not all((folder / name).is_file() for name in snapshot.files) or not snapshot.files:
            self.download(snapshot, folder)
        return snapshot, folder

    def _split_files(self, snapshot: Dataset, folder: Path) -> dict[str, Path]:
        files: dict[str, Path] = {}
        for split in ("train", "test"):
            for ext in ("parquet", "jsonl"):
                if f"{split}.{ext}" in snapshot.files and split not in files:
                    files[split] = folder / f"{split}.{ext}"
        return files

    def to_pandas(self, dataset, *, split: str | None = None, cache_dir=None):
        """The rows as a pandas DataFrame: one split, or all with a `split` column."""
        import pandas as pd

        snapshot, folder = self._local(dataset, cache_dir)
        frames = []
        for name, path in self._split_files(snapshot, folder).items():
            if split is not None and name != split:
                continue
            frame = pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_json(path, lines=True)
            if split is None:
                frame.insert(0, "split", name)
            frames.append(frame)
        if not frames:
            return pd.DataFrame()
        return pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]

    def to_hf(self, dataset, *, cache_dir=None):
        """The rows as a Hugging Face `datasets.DatasetDict` (train, test), ready for TRL trainers."""
        from datasets import DatasetDict, load_dataset

        snapshot, folder = self._local(dataset, cache_dir)
        files = self._split_files(snapshot, folder)
        kinds = {path.suffix for path in files.values()}
        builder = "parquet" if kinds == {".parquet"} else "json"
        loaded = load_dataset(builder, data_files={k: str(v) for k, v in files.items()})
        return DatasetDict(dict(loaded))

    def open(self, dataset, *, as_: str = "pandas", **kwargs):
        """`as_="pandas"` (a DataFrame) or `as_="datasets"` (a DatasetDict)."""
        if as_ in ("datasets", "hf"):
            return self.to_hf(dataset, **kwargs)
        return self.to_pandas(dataset, **kwargs)

    def delete(self, dataset) -> None:
        self._c._json("DELETE", f"/datasets/{_ref(dataset)}")


class Jobs(_Resource):
    def start(self, kind: str, project, *, dataset=None, base_model=None, reward_model=None,
              params: dict | None = None) -> Job:  # fmt: skip
        """Queue a job of any kind (reward, dpo, kto, ppo, grpo, rloo, generate, score, export, ...)."""
        body: dict[str, Any] = {"kind": kind, "project_id": _ref(project), "params": params or {}}
        if dataset is not None:
            body["dataset_id"] = int(_ref(dataset))
        if base_model is not None:
            body["base_model"] = _ref(base_model)
        if reward_model is not None:
            body["reward_model"] = _ref(reward_model)
        return Job(**self._c._json("POST", "/jobs", json=body))

    def get(self, job) -> Job:
        return Job(**self._c._json("GET", f"/jobs/{_ref(job)}"))

    def list(self, project=None, *, page_size: int | None = None) -> list[Job]:
        params = {"project_id": int(self._c.projects.get(project).id)} if project is not None else {}
        return [Job(**j) for j in self._c._paged("/jobs", params, page_size)]

    def cancel(self, job) -> Job:
        return Job(**self._c._json("POST", f"/jobs/{_ref(job)}/cancel"))

    def retry(self, job) -> Job:
        """Queue a failed or cancelled job again (its dependents too)."""
        return Job(**self._c._json("POST", f"/jobs/{_ref(job)}/retry"))

    def metrics(self, job) -> list[dict]:
        """Per-step metrics `[{step, metrics: {...}, at}]`."""
        return self._c._json("GET", f"/jobs/{_ref(job)}/metrics")

    def wait(self, job, *, timeout: float | None = None, poll: float = 1.0, progress: bool = True,
             raise_on_failure: bool = True, on_update: Callable[[Job], None] | None = None) -> Job:  # fmt: skip
        """Until the job ends; a progress bar when tqdm is installed. Raises `JobFailedError` when it ends
        failed or cancelled (unless `raise_on_failure=False`), `WaitTimeout` after `timeout` seconds."""
        deadline = None if timeout is None else time.monotonic() + timeout
        state = self.get(job)
        bar = _progress_bar(100, f"{state.kind} job {state.id}", progress and not state.done)
        shown = 0
        try:
            while True:
                if on_update:
                    on_update(state)
                if bar is not None:
                    step = int(state.progress * 100) - shown
                    if step > 0:
                        bar.update(step)
                        shown += step
                    bar.set_postfix_str((state.message or state.status)[:60])
                if state.done:
                    break
                if deadline is not None and time.monotonic() > deadline:
                    raise WaitTimeout(f"Job {state.id} is still {state.status} after {timeout} s.")
                time.sleep(poll)
                state = self.get(state.id)
        finally:
            if bar is not None:
                bar.close()
        if raise_on_failure and state.status != "succeeded":
            raise JobFailedError(state, f"Job {state.id} ({state.kind}) {state.status}: {state.error or state.message}")
        return state


class Models(_Resource):
    def list(self, *, kind: str | None = None, project=None, page_size: int | None = None) -> list[ModelVersion]:
        params: dict[str, Any] = {"kind": kind} if kind else {}
        if project is not None:
            params["project_id"] = int(self._c.projects.get(project).id)
        return [ModelVersion(**m) for m in self._c._paged("/models", params, page_size)]

    def get(self, model) -> ModelVersion:
        return ModelVersion(**self._c._json("GET", f"/models/{_ref(model)}"))

    def add(self, name: str, path: str | os.PathLike, *, kind: str, project=None) -> ModelVersion:
        """Register a Hugging Face checkpoint directory on the server's disk (it must hold a config.json)."""
        body = {"name": name, "path": str(path), "kind": kind}
        if project is not None:
            body["project_id"] = _ref(project)
        return ModelVersion(**self._c._json("POST", "/models", json=body))


class Webhooks(_Resource):
    def create(self, url: str, events: list[str], *, project=None, description: str = "") -> Webhook:
        """A new endpoint (admin); the answer's `secret` is shown this once."""
        body = {"url": url, "events": events, "description": description}
        if project is not None:
            body["project_id"] = _ref(project)
        return Webhook(**self._c._json("POST", "/webhooks", json=body))

    def list(self, *, page_size: int | None = None) -> list[Webhook]:
        return [Webhook(**w) for w in self._c._paged("/webhooks", page_size=page_size)]

    def deliveries(self, webhook, *, page_size: int | None = None) -> list[dict]:
        return list(self._c._paged(f"/webhooks/{_ref(webhook)}/deliveries", page_size=page_size))

    def delete(self, webhook) -> None:
        self._c._json("DELETE", f"/webhooks/{_ref(webhook)}")


class Rounds(_Resource):
    """Turns of the loop: generate, rate, snapshot, reward and policy updates, evaluation (staff)."""

    def list(self, project) -> list[dict]:
        """Every round, oldest first, with its jobs, versions and metrics (win rate, reward accuracy, KL, ...)."""
        return self._c._json("GET", f"/projects/{_ref(project)}/rounds")["rounds"]

    def start(self, project) -> dict:
        """Start the project's next round now (ConflictError while one is running)."""
        return self._c._json("POST", f"/projects/{_ref(project)}/rounds")

    def recipe(self, project) -> dict:
        return self._c._json("GET", f"/projects/{_ref(project)}/rounds/recipe")

    def set_recipe(self, project, **settings) -> dict:
        """Change some of the round recipe's settings; the others keep their values."""
        return self._c._json("PUT", f"/projects/{_ref(project)}/rounds/recipe", json=settings)
