#!/bin/sh
# The OLD tracking design, kept only as a baseline for scripts/bench-milter.sh: a Postfix pipe(8)
# content_filter on the port-25 smtpd. master.cf runs it as
#   trackpipe unix - n n - 10 pipe flags=Rq user=vmail null_sender=
#     argv=.../trackpipe.sh MILTER_BIN BASE_URL POSTFIX_CONFIG_DIR ${sender} ${recipient}
# It adds the pixel with `mailserver-milter inject` and reinjects the result with sendmail into
# pickup, where non_smtpd_milters (OpenDKIM) sign it. Pickup mail is not content-filtered again, so
# there is no loop (recipe G20). A non-root `sendmail -C DIR` needs DIR in alternate_config_directories
# of /etc/postfix/main.cf (recipe G4); bench-milter.sh sets that up. Exit 75 = try again later.
bin=$1 base=$2 conf=$3 sender=$4
shift 4
"$bin" inject --base-url "$base" 2>/dev/null | /usr/sbin/sendmail -C "$conf" -G -i -f "$sender" -- "$@" || exit 75
