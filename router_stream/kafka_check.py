"""Before a command works with Kafka: can we reach it, does it accept us, do our topics exist?

Why a check of our own: aiokafka folds every bootstrap failure, a refused password included, into
one ``KafkaConnectionError("Unable to bootstrap ...")`` (after logging each one), and a Faust worker
that cannot start prints a page of traceback. ``router-stream run``, ``send`` and ``tail`` call
:func:`preflight` first, so each expected failure is one line that says what to do, with its own
exit code (see :mod:`router_stream.cli`):

* brokers unreachable → :class:`~router_stream.errors.KafkaUnavailable` (exit 75: retry later);
* credentials, SASL mechanism or ACLs refused → :class:`~router_stream.errors.ConfigError` (exit 2);
* a topic missing → :class:`~router_stream.errors.SetupError` (exit 2) naming
  ``router-stream topics apply``.

Topics are found by listing, never by describing them by name: a metadata request for a missing
topic makes a broker with ``auto.create.topics.enable=true`` (Kafka's default) create it with its
own defaults (one partition, not compacted), which is worse than failing.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping

from .config import KafkaConfig
from .errors import ConfigError, KafkaUnavailable, SetupError
from .kafka_settings import client_settings

#: Seconds to wait for one bootstrap server to answer (connect, TLS, SASL) and for the topic list.
CONNECT_TIMEOUT_S = 10.0


def refused_errors() -> tuple[type[BaseException], ...]:
    """aiokafka errors that mean "the broker answered and said no": retrying cannot help."""
    from aiokafka import errors as e

    return (
        e.AuthenticationFailedError,
        e.SaslAuthenticationFailed,
        e.UnsupportedSaslMechanismError,
        e.IllegalSaslStateError,
        e.TopicAuthorizationFailedError,
        e.ClusterAuthorizationFailedError,
        e.GroupAuthorizationFailedError,
        e.TransactionalIdAuthorizationFailed,
    )


def refused(exc: BaseException) -> ConfigError:
    return ConfigError(
        f"kafka: the broker refused us ({_describe(exc)}); check kafka.security_protocol, "
        "kafka.sasl_mechanism, the credentials' env vars and the ACLs (docs/operations.md, Security)"
    )


def unreachable(bootstrap: str, why: str) -> KafkaUnavailable:
    return KafkaUnavailable(
        f"cannot reach Kafka at {bootstrap} ({why}); start the broker, or set "
        "kafka.bootstrap_servers (or ROUTER_STREAM_BOOTSTRAP_SERVERS) to the address it "
        "advertises, then run the command again"
    )


def _describe(exc: BaseException) -> str:
    """``Class: message`` once (aiokafka's messages often start with their class name already)."""
    name, text = type(exc).__name__, str(exc).strip()
    return text if name in text else f"{name}: {text}" if text else name


def translate(exc: BaseException, bootstrap: str, doing: str) -> Exception:
    """The error to raise for an aiokafka/OS error met while ``doing`` something with Kafka."""
    from aiokafka.errors import KafkaConnectionError, KafkaError

    if isinstance(exc, refused_errors()):
        return refused(exc)
    if isinstance(exc, KafkaConnectionError):
        return unreachable(bootstrap, str(exc) or type(exc).__name__)
    if isinstance(exc, (KafkaError, TimeoutError, asyncio.TimeoutError, OSError)):
        return KafkaUnavailable(f"{doing} failed talking to Kafka at {bootstrap}: {_describe(exc)}")
    return exc if isinstance(exc, Exception) else RuntimeError(str(exc))


async def check_login(kafka: KafkaConfig, timeout: float = CONNECT_TIMEOUT_S) -> None:
    """Open one connection to a bootstrap server, with TLS and SASL as configured, and close it.

    Raises :class:`ConfigError` when a server refuses the login and :class:`KafkaUnavailable`
    when none answers within ``timeout`` seconds each.
    """
    from aiokafka.conn import collect_hosts, create_conn

    settings = client_settings(kafka)
    security = {k: v for k, v in settings.items() if k != "bootstrap_servers"}
    problems = []
    for host, port, _ in collect_hosts(kafka.bootstrap_servers, randomize=False):
        try:
            conn = await asyncio.wait_for(
                create_conn(host, port, request_timeout_ms=int(timeout * 1000), **security), timeout
            )
        except refused_errors() as exc:
            raise refused(exc) from None
        except TimeoutError:
            problems.append(f"{host}:{port}: no answer within {timeout:g} s")
        except Exception as exc:  # OSError, a KafkaError during the handshake, bad TLS...
            problems.append(f"{host}:{port}: {_describe(exc)}")
        else:
            conn.close()
            return
    raise unreachable(kafka.bootstrap_servers, "; ".join(problems) or "no bootstrap servers")


async def topic_partitions(
    kafka: KafkaConfig, names: Iterable[str], timeout: float = CONNECT_TIMEOUT_S
) -> dict[str, int]:
    """Partition counts of those of ``names`` that exist. Lists first, then describes only topics
    that exist (describing a missing one by name could create it, see the module docstring)."""
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(**client_settings(kafka), request_timeout_ms=int(timeout * 1000))
    try:
        await asyncio.wait_for(admin.start(), timeout)
        listed = set(await asyncio.wait_for(admin.list_topics(), timeout))
        present = sorted(set(names) & listed)
        described = await asyncio.wait_for(admin.describe_topics(present), timeout) if present else []
    except Exception as exc:
        raise translate(exc, kafka.bootstrap_servers, "listing topics") from None
    finally:
        await admin.close()
    return {
        t["topic"]: len(t["partitions"]) for t in described if t.get("error_code", 0) == 0 and t["partitions"]
    }


async def preflight(
    kafka: KafkaConfig, topics: Mapping[str, str], apply_hint: str, timeout: float = CONNECT_TIMEOUT_S
) -> dict[str, int]:
    """Raise unless Kafka answers, accepts our login and has every topic in ``topics`` (role → name);
    return each topic's partition count.

    ``apply_hint`` is the command that creates them, e.g. ``router-stream topics apply --config c.yaml``.
    """
    await check_login(kafka, timeout)
    found = await topic_partitions(kafka, topics.values(), timeout)
    missing = [f"{name} ({role})" for role, name in topics.items() if name not in found]
    if missing:
        raise SetupError(
            f"{'topic' if len(missing) == 1 else 'topics'} {', '.join(missing)} not found on "
            f"{kafka.bootstrap_servers} (or not visible to this principal); create them with: "
            f"{apply_hint}"
        )
    return found


def run_preflight(kafka: KafkaConfig, topics: Mapping[str, str], apply_hint: str) -> dict[str, int]:
    """:func:`preflight` from synchronous code, with aiokafka's own connection logging silenced."""
    import logging

    logger = logging.getLogger("aiokafka")
    level = logger.level
    logger.setLevel(logging.CRITICAL)  # its "Unable connect to ..." lines repeat what we say in one
    try:
        return asyncio.run(preflight(kafka, topics, apply_hint))
    finally:
        logger.setLevel(level)


def raise_if_login_refused(kafka: KafkaConfig) -> None:
    """Raise :class:`ConfigError` when the broker refuses our login; return otherwise (also when
    it cannot be reached). For callers that met a "cannot reach Kafka" from aiokafka, which says
    the same for a wrong password."""
    import logging

    logger = logging.getLogger("aiokafka")
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        asyncio.run(check_login(kafka))
    except KafkaUnavailable:
        return
    finally:
        logger.setLevel(level)
