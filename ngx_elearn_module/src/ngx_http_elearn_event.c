
/*
 * elearn event: the one adapter that puts a library-owned socket on
 * nginx's event loop.
 *
 * libpq, hiredis and librdkafka each give us a descriptor to watch (a
 * socket, or the pipe librdkafka's queue signals).  Every backend wraps it
 * the same way: an nginx connection from ngx_get_connection(), its events
 * driving the library, and, since nginx uses edge-triggered epoll, handlers
 * that drain the descriptor completely and ask the kernel, not nginx's
 * flags, whether more is there.  This file holds that common part; what
 * to do on each event stays with the backend.
 *
 * What this file must never do: close a descriptor (the library owns it
 * and may already have closed it, or given its number to a new socket),
 * block (poll() here never waits), or call into a library.
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_event.h>
#include <poll.h>

#include "ngx_http_elearn_event.h"


ngx_connection_t *
ngx_http_elearn_event_attach(ngx_socket_t fd, ngx_log_t *log,
    ngx_event_handler_pt read_handler, ngx_event_handler_pt write_handler,
    void *data)
{
    ngx_connection_t  *c;

    c = ngx_get_connection(fd, log);
    if (c == NULL) {
        return NULL;
    }

    c->data = data;
    c->read->handler = read_handler;
    c->write->handler = write_handler;
    c->read->log = c->log;
    c->write->log = c->log;

    if (ngx_handle_read_event(c->read, 0) != NGX_OK) {
        ngx_http_elearn_event_detach(c);
        return NULL;
    }

    return c;
}


/*
 * The kernel forgets a closed descriptor's epoll registration by itself,
 * so NGX_CLOSE_EVENT spares an epoll_ctl() on a descriptor that is gone
 * or may even be reused.
 */

void
ngx_http_elearn_event_detach(ngx_connection_t *c)
{
    if (c == NULL) {
        return;
    }

    if (ngx_del_conn) {
        ngx_del_conn(c, NGX_CLOSE_EVENT);

    } else {
        if (c->read->active || c->read->disabled) {
            ngx_del_event(c->read, NGX_READ_EVENT, NGX_CLOSE_EVENT);
        }

        if (c->write->active || c->write->disabled) {
            ngx_del_event(c->write, NGX_WRITE_EVENT, NGX_CLOSE_EVENT);
        }
    }

    if (c->read->posted) {
        ngx_delete_posted_event(c->read);
    }

    if (c->write->posted) {
        ngx_delete_posted_event(c->write);
    }

    c->read->closed = 1;
    c->write->closed = 1;

    ngx_free_connection(c);

    /* nginx skips events still queued for a connection with fd -1 */
    c->fd = (ngx_socket_t) -1;
}


ngx_uint_t
ngx_http_elearn_event_ready(ngx_socket_t fd, short events, const char *who)
{
    struct pollfd  pfd;

    pfd.fd = fd;
    pfd.events = events;
    pfd.revents = 0;

    if (poll(&pfd, 1, 0) == -1) {
        ngx_log_error(NGX_LOG_ALERT, ngx_cycle->log, ngx_errno,
                      "elearn %s: poll() failed", who);
        return 0;
    }

    return pfd.revents != 0;
}
