/* The /console HTTP handler (console.c): a raw byte stream between an HTTP client and a running
 * VM's serial console, as XAPI's /console (http/connect_console, role vm-operator). */
#pragma once

#include "xapid.h"

struct MHD_Connection;

/* Whether http.c routes this path here ("/console"). */
bool console_http_path(const char *url);

/* Handles one /console request (MHD access handler context; called once the request head is
 * complete). owner identifies the listener (its relays end in console_http_stop); tls says the
 * connection is HTTPS; local that it came over the pre-authenticated Unix socket.
 *
 * - GET (HTTP/1.1) with "Connection: Upgrade" and "Upgrade: nuvem-console": 101, then raw
 *   bytes both ways (MHD's upgrade; plain, TLS and Unix listeners).
 * - CONNECT (XAPI's xe): 200, then raw bytes both ways (plain HTTP and the Unix socket only:
 *   the stream takes over the connection's socket; over TLS it is refused with 501).
 * Query: uuid=<console uuid> or ref=<console ref>; auth: session_id= (query or cookie) or
 * Basic. Errors: 401 no or bad credentials, 403 role, 404 unknown console, 503 VM not running
 * (an XML-RPC failure body: VM_BAD_POWER_STATE), 405 other methods, 426 GET without the
 * upgrade headers. *slot (the request's, NULL at first) holds a queued upgrade until MHD hands
 * the socket over. Returns an MHD_Result. */
int console_http_handle(xapid *x, struct MHD_Connection *c, const char *method, const char *version,
                        void *owner, bool tls, bool local, void **slot);
/* The request ended (MHD's completion callback): frees a stream whose 101 never went out
 * (*slot of console_http_handle, NULL once the stream runs). */
void console_http_completed(void *slot_value);

/* Ends the streams of a listener (shuts their sockets down) and waits up to 10 s for them;
 * call before MHD_stop_daemon. */
void console_http_stop(void *owner);
