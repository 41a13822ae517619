"""TLS client settings → ssl.SSLContext, shared by every TLS-capable sink."""

from __future__ import annotations

import ssl
from dataclasses import dataclass, field


@dataclass(slots=True)
class TlsOptions:
    verify: bool = True  # certificate and host name verification (on unless said otherwise)
    ca_file: str | None = None
    ca_dir: str | None = None
    cert_file: str | None = None  # client certificate, for mTLS
    key_file: str | None = None
    server_name: str | None = None  # SNI and the name checked; default: the host connected to
    min_version: str = "TLSv1.2"
    handshake_timeout: float = 10.0
    key_password: str | None = field(default=None, repr=False)  # the client key's passphrase


class TlsFileError(ValueError):
    """A TLS file that does not load; ``key`` names its setting (``ca_file``,
    ``cert_file``, ``key_file``), for the config's error line."""

    def __init__(self, key: str, text: str) -> None:
        super().__init__(text)
        self.key = key


class KeyEncrypted(Exception):
    """The client key wants a passphrase and none was given (OpenSSL would ask for it
    on the terminal: check and run waited there)."""


_VERSIONS = {"TLSv1.2": ssl.TLSVersion.TLSv1_2, "TLSv1.3": ssl.TLSVersion.TLSv1_3}


def client_context(opts: TlsOptions) -> ssl.SSLContext:
    """A client context; raises ValueError/ssl.SSLError/OSError with a clear message."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    try:
        ctx.minimum_version = _VERSIONS[opts.min_version]
    except KeyError:
        raise ValueError(f"tls min_version must be one of {sorted(_VERSIONS)}, not {opts.min_version!r}") from None
    if opts.verify:
        ctx.check_hostname = True
        ctx.verify_mode = ssl.CERT_REQUIRED
        if opts.ca_file or opts.ca_dir:
            try:
                ctx.load_verify_locations(cafile=opts.ca_file, capath=opts.ca_dir)
            except ssl.SSLError as exc:  # name the file: ssl's text names none
                raise TlsFileError("ca_file" if opts.ca_file else "ca_dir",
                                   f"CA {opts.ca_file or opts.ca_dir}: {exc}") from exc
        else:
            ctx.load_default_certs()
    else:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    if opts.cert_file:
        key = opts.key_file or opts.cert_file
        try:
            ctx.load_cert_chain(opts.cert_file, opts.key_file,
                                password=opts.key_password if opts.key_password is not None
                                else _no_password)
        except KeyEncrypted:
            raise TlsFileError("key_file", f"client key {key} is encrypted: give its passphrase "
                               "in key_password_file or key_password_env") from None
        except ssl.SSLError as exc:  # a key that does not match its certificate, a bad PEM
            if opts.key_password is not None and "PEM lib" in str(exc):
                raise TlsFileError("key_file", f"client key {key}: cannot decrypt it: wrong "
                                   "passphrase (key_password_file / key_password_env)?") from exc
            raise TlsFileError("cert_file",
                               f"client certificate {opts.cert_file} / key {key}: {exc}") from exc
    return ctx


def _no_password() -> str:
    raise KeyEncrypted
