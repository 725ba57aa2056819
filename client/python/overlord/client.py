"""The trainer-side client of one rank's constructor."""

import numbers
import os

from . import _overlord

_UINT32_MAX = 2**32 - 1
_UINT64_MAX = 2**64 - 1
_STATE_KEYS = ("rank", "cp_rank", "next_step")


def _check_integer(name, value, maximum):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    if not 0 <= value <= maximum:
        raise ValueError(f"{name} must be in [0, {maximum}], got {value}")
    return int(value)


def _normalize_endpoint(endpoint):
    if not isinstance(endpoint, str) or not endpoint:
        raise ValueError(
            f"endpoint must be 'tcp://HOST:PORT' or 'HOST:PORT', got {endpoint!r}")
    if "://" not in endpoint:
        return "tcp://" + endpoint
    return endpoint


class Client:
    """Receive one rank's packed batches from its Overlord constructor.

    Give exactly one of ``endpoint`` or ``planner``. ``endpoint`` is the
    constructor at ``base_port + rank``, as ``"tcp://HOST:PORT"`` or
    ``"HOST:PORT"``. ``planner`` is ``"HOST:PORT"`` of the planner's
    ``planner_port``. The client asks it for the rank's endpoint, and
    retries every 200 ms while the planner cannot be reached or has not
    assigned the rank yet. With a planner, the client also moves to the
    rank's other endpoints (its shadow constructor) when the current one
    sends nothing for ``failover_timeout`` seconds, as
    ``overlord_pull --planner`` does.

    ``prefetch`` requests stay in flight. ``timeout`` (seconds) bounds each
    wait for a batch and the planner lookup, and expiry raises
    :class:`overlord.TimeoutError`. ``first_step`` is the first step
    requested.

    ``curve_secret`` and ``curve_server_public`` name Z85 key files (as
    made by ``scripts/gen-certs``) for constructors that use CURVE; give
    both or neither. ``tls_cert``, ``tls_key`` and ``tls_ca`` name PEM
    files for a planner that uses TLS.

    Each batch is a dict. ``tokens``, ``labels``, ``loss_mask`` and
    ``position_ids`` are read-only NumPy arrays of shape
    ``[rows, row_length]`` (int32, int32, uint8, int32) and ``cu_seqlens``
    (int32) and ``row_splits`` (uint32) are 1-D. All six view the received
    ZeroMQ message without a copy, and their ``base`` is the
    ``overlord._overlord.BatchBuffer`` that owns the message. The other
    entries are Python values: ``step``, ``rank``, ``rows``,
    ``sequence_length``, ``row_length``, ``pad_id``, ``cp_size``,
    ``cp_rank``, ``cp_chunks``, ``digest`` (hex SHA-256 of the content,
    equal to ``overlord_pull``'s), ``source_names``, ``documents`` (one
    dict per document slice), ``images`` and ``counters``.

    ``images`` has one dict per image of an image-text document: ``row``,
    ``row_offset`` (first of its ``patches`` positions in the whole row,
    which hold the image token with label -100), ``patches``, ``height``,
    ``width``, ``channels``, ``source_index``, ``key``, ``pixels``, a
    read-only uint8 array ``[channels, height, width]`` that also views
    the message without a copy, and ``mean`` and ``std``, one value per
    channel. :func:`overlord.normalise_image` (or :func:`to_torch`) gives
    the normalised float32 values ``(v / 255 - mean) / std``.

    Iterating yields batches forever. A client serves one thread at a
    time (concurrent calls are serialised) and releases the GIL while it
    waits. Create it in the process that uses it: its ZeroMQ socket does
    not survive ``fork``.
    """

    def __init__(self, endpoint=None, planner=None, rank=0, cp_rank=0,
                 prefetch=2, timeout=30.0, first_step=0, failover_timeout=3.0,
                 curve_secret=None, curve_server_public=None,
                 tls_cert=None, tls_key=None, tls_ca=None):
        if (endpoint is None) == (planner is None):
            raise ValueError("give exactly one of endpoint and planner")
        self._rank = _check_integer("rank", rank, _UINT32_MAX)
        self._cp_rank = _check_integer("cp_rank", cp_rank, _UINT32_MAX)
        self._prefetch = _check_integer("prefetch", prefetch, _UINT32_MAX)
        if self._prefetch == 0:
            raise ValueError("prefetch must be at least 1")
        if isinstance(timeout, bool) or not isinstance(timeout, numbers.Real):
            raise ValueError(f"timeout must be a number of seconds, got {timeout!r}")
        if not 0 < timeout <= 1e9:
            raise ValueError(f"timeout must be in (0, 1e9] seconds, got {timeout}")
        self._timeout = float(timeout)
        if isinstance(failover_timeout, bool) or not isinstance(failover_timeout, numbers.Real):
            raise ValueError(
                f"failover_timeout must be a number of seconds, got {failover_timeout!r}")
        if not 0 < failover_timeout <= 1e9:
            raise ValueError(
                f"failover_timeout must be in (0, 1e9] seconds, got {failover_timeout}")
        self._failover_timeout = float(failover_timeout)
        first_step = _check_integer("first_step", first_step, _UINT64_MAX)

        self._planner = None
        self._endpoint = None
        if planner is not None:
            if not isinstance(planner, str) or ":" not in planner:
                raise ValueError(f"planner must be 'HOST:PORT', got {planner!r}")
            self._planner = planner
        else:
            self._endpoint = _normalize_endpoint(endpoint)
        self._security = {}
        for name, value in (("curve_secret", curve_secret),
                            ("curve_server_public", curve_server_public),
                            ("tls_cert", tls_cert), ("tls_key", tls_key),
                            ("tls_ca", tls_ca)):
            if value is None:
                continue
            try:
                self._security[name] = os.fsdecode(value)
            except TypeError:
                raise ValueError(f"{name} must be a file path, got {value!r}") from None
        self._core = None
        self._open(first_step)

    def _open(self, first_step):
        """Connect a new C++ client whose first batch is ``first_step``.

        The old connection stays in use when this raises.
        """
        # With a planner, the endpoint is looked up again on every open,
        # because the rank may have moved to another node.
        core = _overlord.BatchClient(
            self._endpoint or "", self._planner or "", self._rank,
            self._cp_rank, self._prefetch, self._timeout, first_step,
            self._failover_timeout, **self._security)
        self._core = core
        self._next_step = first_step

    @property
    def rank(self):
        """Data-parallel rank this client receives."""
        return self._rank

    @property
    def cp_rank(self):
        """Context-parallel slice this client receives."""
        return self._cp_rank

    @property
    def endpoint(self):
        """Constructor endpoint that requests go to now, ``tcp://HOST:PORT``."""
        return self._core.endpoint if self._core is not None else self._endpoint

    @property
    def node(self):
        """Node id serving :attr:`endpoint`, from the planner lookups at the
        start and at each failover (empty with ``endpoint``, or when a lookup
        failed)."""
        return self._core.node if self._core is not None else ""

    @property
    def failovers(self):
        """Times this connection moved to another endpoint of the rank."""
        return self._core.failovers if self._core is not None else 0

    def next(self):
        """Wait for the next step's batch and return it as a dict.

        Raises :class:`overlord.TimeoutError` when no batch arrives within
        the timeout, and the matching :class:`overlord.OverlordError`
        subclass when the constructor replies with an error.
        """
        if self._core is None:
            raise ValueError("the client is closed")
        batch = self._core.next()
        self._next_step = batch["step"] + 1
        return batch

    def __iter__(self):
        return self

    def __next__(self):
        return self.next()

    def ready(self):
        """Return how many batches have arrived ahead of the next one."""
        if self._core is None:
            raise ValueError("the client is closed")
        return self._core.ready()

    def state_dict(self):
        """Return the position after the last batch handed to the caller.

        The dict contains ``rank``, ``cp_rank`` and ``next_step``. Batches
        received ahead (prefetched) but not returned yet are not counted.
        """
        return {"rank": self._rank, "cp_rank": self._cp_rank,
                "next_step": self._next_step}

    @staticmethod
    def _validate_state(state, rank_expected, cp_rank_expected):
        """Return ``state["next_step"]``, or raise ValueError for a bad state."""
        if not isinstance(state, dict):
            raise ValueError(
                f"state must be a dict from Client.state_dict(), got {type(state).__name__}")
        missing = [key for key in _STATE_KEYS if key not in state]
        if missing:
            raise ValueError(f"state is missing {', '.join(missing)} (expected keys: "
                             f"{', '.join(_STATE_KEYS)})")
        unknown = sorted(str(key) for key in state if key not in _STATE_KEYS)
        if unknown:
            raise ValueError(f"state has unknown keys {', '.join(unknown)}")
        rank = _check_integer("state['rank']", state["rank"], _UINT32_MAX)
        cp_rank = _check_integer("state['cp_rank']", state["cp_rank"], _UINT32_MAX)
        next_step = _check_integer("state['next_step']", state["next_step"], _UINT64_MAX)
        if rank != rank_expected or cp_rank != cp_rank_expected:
            raise ValueError(
                f"state is for rank {rank} cp_rank {cp_rank}, but this client "
                f"receives rank {rank_expected} cp_rank {cp_rank_expected}")
        return next_step

    def load_state_dict(self, state):
        """Continue at ``state["next_step"]`` with a new connection.

        ``state`` comes from :meth:`state_dict` of a client of the same
        rank and context-parallel slice. Batches prefetched by the old
        connection are dropped. Raises ValueError when ``state`` is not such
        a dict.

        A constructor sends each step once, so after loading a step that
        this job already delivered, :meth:`next` raises
        :class:`overlord.NotFoundError`. To resume after a restart, start
        the job with ``overlordd --resume DIR --from-step S``, where ``S``
        is ``state["next_step"]``.
        """
        next_step = self._validate_state(state, self._rank, self._cp_rank)
        self._open(next_step)

    def close(self):
        """Close the connection. Later calls to :meth:`next` raise ValueError."""
        self._core = None

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()

    def __repr__(self):
        where = self.endpoint if self._planner is None else (
            f"{self.endpoint} via planner {self._planner}")
        return (f"overlord.Client(rank={self._rank}, cp_rank={self._cp_rank}, "
                f"endpoint={where}, next_step={self._next_step})")
