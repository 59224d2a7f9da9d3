"""JSON over HTTP for the scorers and judges that live behind web APIs (Perspective, OpenAI-compatible
endpoints): a rate limit, retries with exponential backoff on 429 and 5xx answers, and one clear line for
everything else (a refused key, a bad request, an unreachable host, an answer that is not JSON)."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request

from llamafoundry.errors import UserError


class JSONClient:
    """POSTs JSON to one service, at most `qps` requests per second."""

    def __init__(self, service: str, qps: float = 1.0, retries: int = 6, timeout_s: float = 60.0) -> None:
        self.service, self.interval, self.retries, self.timeout_s = service, 1.0 / qps, retries, timeout_s
        self._last = 0.0

    def post(self, url: str, body: dict, headers: dict[str, str] | None = None) -> dict:
        data = json.dumps(body).encode()
        for attempt in range(self.retries + 1):
            self._wait_turn()
            request = urllib.request.Request(
                url, data=data, headers={"Content-Type": "application/json", **(headers or {})}
            )
            try:
                with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                    return self._json(response.read())
            except urllib.error.HTTPError as exc:
                if (exc.code == 429 or exc.code >= 500) and attempt < self.retries:
                    time.sleep(min(60.0, self.interval * 2**attempt))
                    continue
                if exc.code == 429 or exc.code >= 500:
                    raise UserError(
                        f"{self.service} still answers {exc.code} after {self.retries} retries"
                    ) from None
                raise UserError(f"{self.service} refused the request ({exc.code}: {_message(exc)})") from None
            except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
                reason = getattr(exc, "reason", exc)
                raise UserError(f"cannot reach {self.service} at {url.split('?')[0]} ({reason})") from None
        raise AssertionError("unreachable")

    def _wait_turn(self) -> None:
        delay = self._last + self.interval - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        self._last = time.monotonic()

    def _json(self, body: bytes) -> dict:
        try:
            answer = json.loads(body)
        except (ValueError, UnicodeDecodeError):
            raise UserError(f"{self.service} answered something that is not JSON: {body[:80]!r}") from None
        if not isinstance(answer, dict):
            raise UserError(f"{self.service} answered {str(answer)[:80]!r}, not a JSON object")
        return answer


def _message(exc: urllib.error.HTTPError) -> str:
    try:
        return json.loads(exc.read())["error"]["message"]
    except (ValueError, KeyError, TypeError):
        return str(exc.reason)
