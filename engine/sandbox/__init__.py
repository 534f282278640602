"""The sandbox: local, faithful stand-ins for SCALARA's export API and casavi's API v2.

Neither real service may be used from our machines, so the demo, cassette recording, benchmarks
and fault tests all run against this one facade: two real HTTP servers on loopback that share one
advanceable clock, a generated SCALARA data set, and fault knobs on both sides.

    with Sandbox(properties=3, seed=1, casavi_faults=FaultConfig(error_rate_503=0.1, seed=7)) as sb:
        token = sb.generate_scalara_token()          # through SCALARA's token endpoint
        ...engine reads sb.scalara_url with token, writes sb.casavi_url with sb.casavi_key/secret...
        sb.casavi.records("units"); sb.casavi_server.counters.writes(); sb.clock.advance(days=1)

Without explicit faults each side gets only the rate limit API.md promises
(``FaultConfig.contract_defaults``); pass ``FaultConfig()`` for no limits at all.
"""

from __future__ import annotations

from types import TracebackType

import httpx

from engine.errors import ConfigError
from engine.sandbox.casavi import CasaviApp
from engine.sandbox.clock import Clock
from engine.sandbox.faults import FaultConfig
from engine.sandbox.generator import generate
from engine.sandbox.http import ServerHandle, serve
from engine.sandbox.scalara import ADMIN_USER, DEFAULT_ACCOUNT, DEFAULT_ADMIN_PASSWORD, ScalaraApp

__all__ = ["CasaviApp", "Clock", "FaultConfig", "Sandbox", "ScalaraApp", "ServerHandle", "serve"]


class Sandbox:
    """Both fake APIs, generated data and fault knobs behind one start/stop."""

    def __init__(self, *, properties: int = 3, seed: int = 1, scalara_faults: FaultConfig | None = None,
                 casavi_faults: FaultConfig | None = None, casavi_page_size: int = 50,
                 casavi_token_lifetime_s: float = 30 * 24 * 3600, unit_quota: int | None = None,
                 clock: Clock | None = None, host: str = "127.0.0.1", scalara_port: int = 0,
                 casavi_port: int = 0) -> None:
        if properties < 1:
            raise ConfigError("the sandbox needs at least 1 property")
        self.clock = clock or Clock()
        self.properties = properties
        self.seed = seed
        self.scalara_faults = scalara_faults if scalara_faults is not None else FaultConfig.contract_defaults("scalara")
        self.casavi_faults = casavi_faults if casavi_faults is not None else FaultConfig.contract_defaults("casavi")
        self.scalara = ScalaraApp(self.clock, {DEFAULT_ACCOUNT: generate(properties, seed, today=self.clock.today())})
        self.casavi = CasaviApp(self.clock, page_size=casavi_page_size, token_lifetime_s=casavi_token_lifetime_s,
                                unit_quota=unit_quota)
        credentials = self.casavi.default_credentials
        if credentials is None:                     # CasaviApp always creates "demo" here
            raise ConfigError("the casavi sandbox has no default account")
        self.casavi_key, self.casavi_secret = credentials
        self._host = host
        self._ports = (scalara_port, casavi_port)
        self._scalara_server: ServerHandle | None = None
        self._casavi_server: ServerHandle | None = None

    # -- lifecycle --------------------------------------------------------------------------------

    def start(self) -> Sandbox:
        """Start both servers (idempotent); a port already in use is a ConfigError."""
        if self._scalara_server is not None:
            return self
        self._scalara_server = self._serve(self.scalara, self._ports[0], self.scalara_faults)
        try:
            self._casavi_server = self._serve(self.casavi, self._ports[1], self.casavi_faults)
        except ConfigError:
            self.stop()
            raise
        return self

    def _serve(self, app: ScalaraApp | CasaviApp, port: int, faults: FaultConfig) -> ServerHandle:
        try:
            return serve(app, host=self._host, port=port, faults=faults)
        except OSError as error:
            raise ConfigError(f"cannot serve the {app.name} sandbox on {self._host}:{port}: "
                              f"{error.strerror or error}") from None

    def stop(self) -> None:
        for server in (self._scalara_server, self._casavi_server):
            if server is not None:
                server.stop()
        self._scalara_server = self._casavi_server = None

    def __enter__(self) -> Sandbox:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    # -- after start ------------------------------------------------------------------------------

    @property
    def scalara_server(self) -> ServerHandle:
        if self._scalara_server is None:
            raise ConfigError("the sandbox is not running; call start() first")
        return self._scalara_server

    @property
    def casavi_server(self) -> ServerHandle:
        if self._casavi_server is None:
            raise ConfigError("the sandbox is not running; call start() first")
        return self._casavi_server

    @property
    def scalara_url(self) -> str:
        return self.scalara_server.url

    @property
    def casavi_url(self) -> str:
        return self.casavi_server.url

    def generate_scalara_token(self, account: str = DEFAULT_ACCOUNT) -> str:
        """A fresh SCALARA token from the admin's "generate token" endpoint (revokes the previous one)."""
        try:
            with httpx.Client(trust_env=False, timeout=10) as client:   # loopback: never via a proxy
                response = client.post(f"{self.scalara_url}/sandbox/accounts/{account}/casavi-token",
                                       json={"user": ADMIN_USER, "password": DEFAULT_ADMIN_PASSWORD})
        except httpx.HTTPError as error:
            raise ConfigError(f"the sandbox's SCALARA token endpoint did not answer: {type(error).__name__}") from None
        if response.status_code != 201:
            raise ConfigError(f"the sandbox's SCALARA token endpoint answered {response.status_code} "
                              f"for account {account!r}")
        token: str = response.json()["token"]
        return token
