"""Client fingerprints: the header sets real OpenAI SDKs, browsers, curl and scripts send.

A fingerprint is what ``fingerprint_cohort`` groups identities by, so the variety here is
the point: benign users spread over many SDK versions and browsers, while a campaign's
accounts share one. Header tuples are built once per client and reused for every request.
"""

from __future__ import annotations

import random

Headers = tuple[tuple[bytes, bytes], ...]

JSON = b"application/json"

PYTHON_SDK_VERSIONS = ("1.35.10", "1.40.8", "1.45.0", "1.51.2", "1.54.3", "1.57.0", "1.59.6")
NODE_SDK_VERSIONS = ("4.52.7", "4.63.0", "4.67.3", "4.73.1", "4.77.0")
PYTHON_RUNTIMES = ("3.9.18", "3.10.12", "3.11.9", "3.12.4", "3.12.7", "3.13.0")
NODE_RUNTIMES = ("v18.19.0", "v20.11.1", "v20.17.0", "v22.9.0")
_PLATFORMS = (("Linux", "x64"), ("MacOS", "arm64"), ("MacOS", "x64"), ("Windows", "x64"))


def _h(*pairs: tuple[str, str]) -> Headers:
    return tuple((name.encode("latin-1"), value.encode("latin-1")) for name, value in pairs)


def openai_python(version: str, system: str, arch: str, runtime: str) -> Headers:
    """The official ``openai`` Python SDK (Stainless-generated headers included)."""
    return _h(
        ("accept", "application/json"),
        ("content-type", "application/json"),
        ("user-agent", f"OpenAI/Python {version}"),
        ("x-stainless-lang", "python"),
        ("x-stainless-package-version", version),
        ("x-stainless-os", system),
        ("x-stainless-arch", arch),
        ("x-stainless-runtime", "CPython"),
        ("x-stainless-runtime-version", runtime),
        ("x-stainless-async", "false"),
        ("x-stainless-retry-count", "0"),
    )


def openai_node(version: str, system: str, arch: str, runtime: str, agent: str = "") -> Headers:
    """The official ``openai`` Node SDK; ``agent`` replaces the user agent (tools built on it)."""
    return _h(
        ("accept", "application/json"),
        ("content-type", "application/json"),
        ("user-agent", agent or f"OpenAI/JS {version}"),
        ("x-stainless-lang", "js"),
        ("x-stainless-package-version", version),
        ("x-stainless-os", system),
        ("x-stainless-arch", arch),
        ("x-stainless-runtime", "node"),
        ("x-stainless-runtime-version", runtime),
        ("x-stainless-retry-count", "0"),
    )


_BROWSERS = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/{v}.0.0.0 Safari/537.36",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/{v}.0.0.0 Safari/537.36",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/17.{m} Safari/605.1.15",
    "Mozilla/5.0 (X11; Linux x86_64; rv:{v}.0) Gecko/20100101 Firefox/{v}.0",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_{m} like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Version/17.{m} Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/{v}.0.0.0 Mobile Safari/537.36",
)
_LANGUAGES = (
    "en-US,en;q=0.9",
    "en-GB,en;q=0.8",
    "de-DE,de;q=0.9,en;q=0.7",
    "fr-FR,fr;q=0.9",
    "es-ES,es;q=0.9,en;q=0.6",
    "pt-BR,pt;q=0.9",
    "en-IN,en;q=0.9,hi;q=0.8",
)
_ORIGINS = ("https://chat.example.com", "https://app.example.org", "https://notes.example.net")


def browser(rng: random.Random) -> Headers:
    """A web chat front end calling the API from the browser (CORS fetch)."""
    agent = rng.choice(_BROWSERS).format(v=rng.randint(118, 131), m=rng.randint(0, 6))
    return popular_browser(rng, agent)


def curl(version: str) -> Headers:
    return _h(
        ("user-agent", f"curl/{version}"), ("accept", "*/*"), ("content-type", "application/json")
    )


def python_requests(version: str) -> Headers:
    return _h(
        ("user-agent", f"python-requests/{version}"),
        ("accept-encoding", "gzip, deflate"),
        ("accept", "*/*"),
        ("content-type", "application/json"),
    )


def python_httpx(version: str) -> Headers:
    return _h(
        ("accept", "*/*"),
        ("accept-encoding", "gzip, deflate"),
        ("user-agent", f"python-httpx/{version}"),
        ("content-type", "application/json"),
    )


def any_python_sdk(rng: random.Random) -> Headers:
    system, arch = rng.choice(_PLATFORMS)
    return openai_python(rng.choice(PYTHON_SDK_VERSIONS), system, arch, rng.choice(PYTHON_RUNTIMES))


def any_node_sdk(rng: random.Random) -> Headers:
    system, arch = rng.choice(_PLATFORMS)
    return openai_node(rng.choice(NODE_SDK_VERSIONS), system, arch, rng.choice(NODE_RUNTIMES))


def human_client(rng: random.Random) -> Headers:
    """What a person's chat client or script sends, in rough real-world proportions."""
    roll = rng.random()
    if roll < 0.45:
        return browser(rng)
    if roll < 0.75:
        return any_python_sdk(rng)
    if roll < 0.90:
        return any_node_sdk(rng)
    if roll < 0.96:
        return curl(rng.choice(("7.81.0", "8.4.0", "8.5.0", "8.7.1")))
    return python_requests(rng.choice(("2.28.2", "2.31.0", "2.32.3")))


def popular_browser(rng: random.Random, agent: str) -> Headers:
    """``browser`` with a given user agent: a current release everyone is on."""
    return _h(
        ("accept", "*/*"),
        ("accept-language", rng.choice(_LANGUAGES)),
        ("content-type", "application/json"),
        ("origin", rng.choice(_ORIGINS)),
        ("sec-fetch-mode", "cors"),
        ("sec-fetch-site", "cross-site"),
        ("user-agent", agent),
    )


#: The most common client builds (issue 13): the latest SDK releases on their most common
#: platform, and the current browser releases, each shared by a large share of all users.
#: ``popular_client`` draws one; the fingerprint is the same whatever else is drawn.
POPULAR_SDKS: tuple[Headers, ...] = (
    openai_python("1.59.6", "Linux", "x64", "3.12.4"),
    openai_python("1.57.0", "MacOS", "arm64", "3.12.7"),
    openai_node("4.77.0", "MacOS", "arm64", "v22.9.0"),
)
POPULAR_BROWSERS = (
    _BROWSERS[0].format(v=131, m=0),  # Chrome on Windows
    _BROWSERS[1].format(v=131, m=0),  # Chrome on macOS
    _BROWSERS[4].format(v=131, m=6),  # Safari on iPhone
)


def popular_client(rng: random.Random) -> Headers:
    """One of the most common builds: a popular browser (60%) or SDK (40%)."""
    if rng.random() < 0.6:
        return popular_browser(rng, rng.choice(POPULAR_BROWSERS))
    return rng.choice(POPULAR_SDKS)


# The coding agent every `coding_agents` account drives: one tool, one fingerprint.
CODING_TOOL = openai_node(
    "4.73.1", "MacOS", "arm64", "v20.17.0", agent="forge-code/2.8.4 (agent; +https://forge.example)"
)


def identity_headers(client: Headers, api_key: str, account: str) -> Headers:
    """An account's full static header set: host, the client's headers, key and account."""
    return (
        (b"host", b"api.sim.example"),
        *client,
        (b"authorization", f"Bearer {api_key}".encode("latin-1")),
        (b"x-account-id", account.encode("latin-1")),
    )
