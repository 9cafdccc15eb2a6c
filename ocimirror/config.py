"""The mirror-sync configuration: what to mirror, from where, into which store.

A YAML file validated by pydantic; ``MirrorConfig.model_json_schema()`` is published in
``deployments/mirror-config.schema.json``. Secrets are never written in the file: credentials and secret
storage options are *references* (an environment variable, the Docker config, a Prefect Secret block)
resolved where they are used, so a config can be logged, shown in the UI or committed.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import re2  # type: ignore[import-untyped]  # google-re2: linear-time matching, no stubs published
import yaml
from packaging.specifiers import InvalidSpecifier, SpecifierSet
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator, model_validator

from .digest import Digest
from .errors import ConfigError, validation_problems
from .mediatypes import MediaType
from .platforms import format_platform, parse_platform
from .remotes.config import Credentials, RegistryConfig, normalise_endpoint

#: A config is a few KiB; one listing a thousand images is ~100 KiB. Larger files are refused unread.
MAX_CONFIG_BYTES = 1024 * 1024
#: More images than any one sync should carry (split the config); keeps a plan's size bounded.
MAX_IMAGES = 10_000
#: Nodes that YAML aliases may add when expanded. Reusing a credentials block costs a handful; a "billion
#: laughs" document adds billions (it is small on disk and explodes when serialised for Prefect).
MAX_ALIAS_EXPANSION = 10_000

_RE2_OPTIONS = re2.Options()
_RE2_OPTIONS.log_errors = False  # the error is raised to us; RE2 would also print it to stderr


def compile_pattern(pattern: str) -> Any:
    """Compile a tag pattern with RE2, whose matching time is linear in the tag's length whatever the
    pattern (Python's ``re`` backtracks: ``(a+)+$`` against a long tag never finishes). RE2 has no
    backreferences or lookaround; such patterns are refused with ``ValueError`` naming them."""
    try:
        return re2.compile(pattern, _RE2_OPTIONS)
    except re2.error as error:
        reason = error.args[0].decode(errors="replace") if error.args else "not supported"
        raise ValueError(f"invalid regular expression {pattern!r} (RE2 syntax, no backreferences): {reason}") from None


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)  # inputs may be secrets


class SecretRef(_Strict):
    """Where a secret comes from: exactly one of an environment variable or a Prefect Secret block."""

    env: str | None = None
    secret_block: str | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> SecretRef:
        if (self.env is None) == (self.secret_block is None):
            raise ValueError("give exactly one of 'env' or 'secret_block'")
        return self


#: Turns a SecretRef into the secret's value. The core reads environment variables; the Prefect tasks add
#: Secret blocks.
SecretReader = Callable[[SecretRef], str]


def read_env_secret(ref: SecretRef) -> str:
    """The value of an ``env`` SecretRef; a ``secret_block`` needs Prefect and is refused here."""
    if ref.env is None:
        raise ConfigError(f"secret block {ref.secret_block!r} can only be read inside a Prefect run")
    value = os.environ.get(ref.env)
    if value is None:
        raise ConfigError(f"environment variable {ref.env} (named by the config) is not set")
    return value


class CredentialsRef(_Strict):
    """Registry credentials by reference.

    ``username`` is plain text (not a secret); ``password`` is a SecretRef. ``docker_config: true`` reads
    Docker's ``config.json`` (auths, credsStore, credHelpers) for the registry instead.
    """

    username: str | None = None
    password: SecretRef | None = None
    docker_config: bool = False

    @model_validator(mode="after")
    def _one_source(self) -> CredentialsRef:
        if self.docker_config and (self.username or self.password):
            raise ValueError("use either docker_config or username/password, not both")
        if not self.docker_config and (self.username is None or self.password is None):
            raise ValueError("username and password are both needed (or docker_config: true)")
        return self

    def resolve(self, read_secret: SecretReader) -> Credentials | None:
        """Explicit credentials, or ``None`` to let the registry client read Docker's config.json."""
        if self.docker_config or self.password is None:
            return None
        return Credentials(username=self.username, password=SecretStr(read_secret(self.password)))


class RegistrySettings(_Strict):
    """How to reach one registry host."""

    mirrors: list[str] = Field(default_factory=list, description="Endpoints tried in order before the registry.")
    insecure: bool = Field(default=False, description="Allow plain HTTP and unverified TLS for this host.")
    ca_bundle: str | None = Field(default=None, description="PEM file of CAs to trust for this host.")
    credentials: CredentialsRef | None = None
    max_requests_per_second: Annotated[float, Field(gt=0)] | None = Field(
        default=None, description="Requests a second to this host, across every worker of the sync."
    )
    max_parallel_fetches: Annotated[int, Field(ge=1)] | None = Field(
        default=None, description="Transfers of this registry's content in flight at once, across every worker."
    )

    @field_validator("mirrors")
    @classmethod
    def _endpoints(cls, mirrors: list[str]) -> list[str]:
        # Checked here so a bad mirror fails the config, not a task run long after.
        return [normalise_endpoint(mirror) for mirror in mirrors]

    def resolve(self, read_secret: SecretReader, max_connections: int) -> RegistryConfig:
        """The registry client's settings, with secrets read."""
        credentials = self.credentials.resolve(read_secret) if self.credentials else None
        return RegistryConfig(
            mirrors=self.mirrors,
            insecure=self.insecure,
            ca_bundle=self.ca_bundle,
            credentials=credentials,
            max_connections=max_connections,
            max_requests_per_second=self.max_requests_per_second,
            max_parallel_fetches=self.max_parallel_fetches,
        )


def registry_configs(
    registries: dict[str, RegistrySettings], read_secret: SecretReader, max_connections: int
) -> dict[str, RegistryConfig]:
    """Resolve every registry's settings for the registry client."""
    return {host: settings.resolve(read_secret, max_connections) for host, settings in registries.items()}


class StoreSettings(_Strict):
    """The destination: an OCI image layout at a local path or fsspec URL (``s3://``, ``gs://``)."""

    url: str
    options: dict[str, Any] = Field(default_factory=dict, description="fsspec storage options (not secret).")
    secret_options: dict[str, SecretRef] = Field(
        default_factory=dict, description="Storage options whose values are secrets, by reference."
    )

    @field_validator("url")
    @classmethod
    def _no_credentials_in_url(cls, url: str) -> str:
        """The URL is a flow parameter, shown in the UI and stored by Prefect: it must hold no secret."""
        if "://" in url and "@" in url.split("://", 1)[1].split("/", 1)[0]:
            raise ValueError("the store URL must not contain credentials; use secret_options")
        return url

    def storage_options(self, read_secret: SecretReader) -> dict[str, Any]:
        """fsspec storage options with secret values read; never log the result."""
        return {**self.options, **{key: read_secret(ref) for key, ref in self.secret_options.items()}}


class ImageSpec(_Strict):
    """One source repository and which of its tags to mirror.

    With no tag selector at all, ``latest`` is mirrored, as ``docker pull`` would. ``tags`` are taken as
    given; the other selectors filter the registry's tag list: ``include``/``exclude`` regular expressions
    (RE2 syntax, full match), a ``semver`` range (PEP 440 specifiers, ``>=3.18,<4``; a space also separates), and the
    ``latest`` N by version. ``digests`` are mirrored untagged-by-name as ``repo@digest``.
    """

    source: str
    tags: list[str] = Field(default_factory=list)
    include: list[str] = Field(default_factory=list)
    exclude: list[str] = Field(default_factory=list)
    semver: str | None = None
    latest: Annotated[int, Field(ge=1)] | None = None
    digests: list[Digest] = Field(default_factory=list)
    platforms: list[str] | None = Field(default=None, description="Overrides the config's default platforms.")
    all_metadata: bool | None = None
    prune: bool | None = Field(
        default=None,
        description="After a successful sync, untag this source's images the selectors no longer select "
        "(overrides the config's default).",
    )
    referrers: bool | list[MediaType] | None = Field(
        default=None,
        description="Mirror the image's referrers (signatures, SBOMs, attestations): true for all, or a list "
        "of artifact types (overrides the config's default).",
    )

    @field_validator("include", "exclude")
    @classmethod
    def _compiles(cls, patterns: list[str]) -> list[str]:
        for pattern in patterns:
            compile_pattern(pattern)
        return patterns

    @field_validator("semver")
    @classmethod
    def _specifier(cls, value: str | None) -> str | None:
        if value is None:
            return None
        try:
            SpecifierSet(",".join(value.split()))
        except InvalidSpecifier:
            raise ValueError(f"invalid version range {value!r} (expected e.g. '>=3.18,<4')") from None
        return value

    def referrer_setting(self, config: MirrorConfig) -> bool | list[str]:
        """Which referrers of this source to mirror (its own ``referrers``, else the config's)."""
        return self.referrers if self.referrers is not None else config.referrers

    def prunes(self, config: MirrorConfig) -> bool:
        """Whether this source's unselected images are untagged after a sync (its own ``prune``, else the
        config's)."""
        return self.prune if self.prune is not None else config.prune

    @property
    def lists_tags(self) -> bool:
        """Whether the registry's tag list is needed to decide what to mirror."""
        return bool(self.include or self.exclude or self.semver or self.latest)

    @property
    def version_range(self) -> SpecifierSet | None:
        return SpecifierSet(",".join(self.semver.split())) if self.semver else None


class MirrorConfig(_Strict):
    """A mirror sync: the store, how to reach registries, and the images to keep mirrored."""

    store: StoreSettings
    images: list[ImageSpec] = Field(min_length=1, max_length=MAX_IMAGES)
    registries: dict[str, RegistrySettings] = Field(default_factory=dict)
    platforms: list[str] = Field(default_factory=list, description="Default platforms; empty means all.")
    all_metadata: bool = False
    concurrency: Annotated[int, Field(ge=1, le=64)] = 8
    prune: bool = Field(
        default=False,
        description="Default for images: untag what the selectors no longer select after a successful sync.",
    )
    referrers: bool | list[MediaType] = Field(
        default=False,
        description="Default for images: mirror referrers (true: all; a list: those artifact types; false: none).",
    )
    fan_out: bool = Field(
        default=False,
        description="With Prefect: run each changed image as a run of the fetch-image deployment, on the "
        "deployment's work pool, instead of in the sync's own run.",
    )

    @field_validator("platforms")
    @classmethod
    def _platforms(cls, values: list[str]) -> list[str]:
        return [format_platform(parse_platform(value)) for value in values]


class _ConfigLoader(yaml.SafeLoader):
    """YAML's safe loader, refusing documents whose aliases expand beyond ``MAX_ALIAS_EXPANSION`` nodes
    (measured on the composed node graph, before any object is built) and cyclic aliases."""

    def compose_document(self) -> yaml.Node | None:
        node: yaml.Node | None = super().compose_document()
        if node is not None:
            added = _expanded_size(node) - _distinct_size(node)
            if added > MAX_ALIAS_EXPANSION:
                raise ConfigError(
                    f"YAML aliases expand to {added} more nodes, over the limit of {MAX_ALIAS_EXPANSION}; "
                    "write the repeated parts out"
                )
        return node


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    if isinstance(node, yaml.MappingNode):
        return [part for pair in node.value for part in pair]
    return []


def _distinct_size(root: yaml.Node) -> int:
    """Nodes in the graph, each counted once however many aliases point at it."""
    seen: set[int] = set()
    pending = [root]
    while pending:
        node = pending.pop()
        if id(node) not in seen:
            seen.add(id(node))
            pending.extend(_children(node))
    return len(seen)


def _expanded_size(root: yaml.Node) -> int:
    """Nodes once every alias is replaced by a copy of its anchor: computed per distinct node (linear in
    the graph, not in the expansion). A cycle expands without end and is refused."""
    sizes: dict[int, int] = {}
    on_path: set[int] = set()
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, children_done = stack.pop()
        key = id(node)
        if children_done:
            on_path.discard(key)
            sizes[key] = 1 + sum(sizes[id(child)] for child in _children(node))
            continue
        if key in sizes:
            continue
        if key in on_path:
            raise ConfigError("a YAML alias refers to a node that contains it (a cycle)")
        on_path.add(key)
        stack.append((node, True))
        stack.extend((child, False) for child in _children(node) if id(child) not in sizes)
    return sizes[id(root)]


def load_config(path: str | Path) -> MirrorConfig:
    """Read and validate a mirror config file; every problem is reported with its location in the file.

    Hostile files are refused before they cost anything: over ``MAX_CONFIG_BYTES``, aliases expanding
    beyond ``MAX_ALIAS_EXPANSION`` nodes, nesting deeper than the YAML parser can follow.
    """
    path = Path(path)
    try:
        with path.open("rb") as file:
            content = file.read(MAX_CONFIG_BYTES + 1)
    except OSError as error:
        raise ConfigError(f"cannot read {path}: {error.strerror}") from None
    if len(content) > MAX_CONFIG_BYTES:
        raise ConfigError(f"{path} is over the {MAX_CONFIG_BYTES} byte limit for a config")
    try:
        data = yaml.load(content, Loader=_ConfigLoader)  # _ConfigLoader is a SafeLoader
    except ConfigError as error:
        raise ConfigError(f"{path}: {error}") from None
    except yaml.YAMLError as error:
        raise ConfigError(f"{path} is not valid YAML: {_one_line(str(error))}") from None
    except RecursionError:
        raise ConfigError(f"{path} nests too deeply") from None
    return parse_config(data, source=str(path))


def _one_line(text: str) -> str:
    return " ".join(text.split())


def parse_config(data: object, source: str = "config") -> MirrorConfig:
    """Validate already-loaded config data (a dict), e.g. a Prefect flow parameter."""
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a mapping at the top level")
    try:
        return MirrorConfig.model_validate(data)
    except ValidationError as error:
        problems = "; ".join(validation_problems(error))
        raise ConfigError(f"{source} is invalid: {problems}") from None
