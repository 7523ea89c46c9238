# Single-container mail server: Postfix + Dovecot + OpenDKIM + the mailserver binaries, run by supervisord.
#
#   docker build -t mailserver .                          compile in rust:1.95-bookworm
#   docker build --build-arg PREBUILT=1 -t mailserver .   use prebuilt/mailserver{,-milter,-web} from the
#                                                         context (binaries built on a bookworm host)
#
# The legacy builder runs every stage, used or not, so the build stage's base image is chosen from
# PREBUILT too: with PREBUILT=1 nothing but debian:bookworm-slim has to be present locally.
ARG PREBUILT=
ARG PREBUILT_BASE=${PREBUILT:+debian:bookworm-slim}
ARG BUILD_IMAGE=${PREBUILT_BASE:-rust:1.95-bookworm}

FROM ${BUILD_IMAGE} AS build
ARG PREBUILT
WORKDIR /src
COPY . .
RUN set -eu; \
    mkdir -p /out; \
    if [ -n "$PREBUILT" ]; then \
        for b in mailserver mailserver-milter mailserver-web; do \
            [ -f "prebuilt/$b" ] || { echo "PREBUILT=1 but prebuilt/$b is missing from the build context" >&2; exit 1; }; \
            install -m 0755 "prebuilt/$b" /out/; \
        done; \
    else \
        cargo build --release --workspace --locked; \
        for b in mailserver mailserver-milter mailserver-web; do install -m 0755 "target/release/$b" /out/; done; \
    fi

FROM debian:bookworm-slim
LABEL org.opencontainers.image.licenses="GPL-3.0-or-later"

# "No configuration": `mailserver init` renders Postfix's whole configuration under /data/config.
RUN set -eux; \
    echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections; \
    echo "postfix postfix/mailname string localhost" | debconf-set-selections; \
    apt-get update; \
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        postfix postfix-sqlite \
        dovecot-core dovecot-imapd dovecot-pop3d dovecot-lmtpd dovecot-sqlite \
        opendkim supervisor ca-certificates bc; \
    rm -rf /var/lib/apt/lists/*

# Fixed ids so that mail in an existing volume stays readable when the image is rebuilt. The
# dashboard and the milter run as their own users, each with a primary group of its own (the main
# database and the TLS key are the dashboard's group's; the milter's owns nothing), both members of
# `mailserver`, which owns the tracking database. Keep in step with scripts/install-deps.sh.
RUN groupadd --system --gid 5000 vmail \
 && useradd --system --uid 5000 --gid 5000 --home-dir /nonexistent --no-create-home \
        --shell /usr/sbin/nologin vmail \
 && groupadd --system --gid 5001 mailserver \
 && groupadd --system --gid 5003 mailserver-web \
 && groupadd --system --gid 5004 mailserver-milter \
 && useradd --system --uid 5001 --gid 5003 --groups mailserver --home-dir /nonexistent \
        --no-create-home --shell /usr/sbin/nologin mailserver-web \
 && useradd --system --uid 5002 --gid 5004 --groups mailserver --home-dir /nonexistent \
        --no-create-home --shell /usr/sbin/nologin mailserver-milter

COPY --from=build /out/mailserver /out/mailserver-milter /out/mailserver-web /usr/local/bin/
COPY docker/entrypoint.sh docker/healthcheck.sh /usr/local/bin/
RUN chmod 0755 /usr/local/bin/entrypoint.sh /usr/local/bin/healthcheck.sh

# BIN_DIR is informational: root renders the binaries' directory from its own executable's path.
ENV DATA_DIR=/data BIN_DIR=/usr/local/bin
VOLUME /data
EXPOSE 25 465 587 110 143 993 995 8080

HEALTHCHECK --interval=5s --timeout=5s --start-period=30s --retries=3 \
    CMD ["/usr/local/bin/healthcheck.sh"]
ENTRYPOINT ["/usr/local/bin/entrypoint.sh"]
