/* The raw-write floor in C: the same program as loadtest/src/bin/sse-floor.rs, for
 * `make bench` to measure beside it (bench.py compiles it with `cc -O2` when a C compiler
 * is there, and holds the gateway to whichever floor costs less in the same run).
 *
 * One thread, one epoll loop. `GET /sub/{topic}` gets SSE headers and `retry:`, then the
 * socket leaves the epoll set and is only a descriptor in its topic's list. `POST
 * /pub/{topic}` renders the body once into `id: n\nevent: progress\ndata: <body>\n\n`
 * and sends that buffer to every socket of the topic with one non-blocking send each; a
 * socket that cannot take it whole is closed and counted. No auth, history, heartbeat,
 * queue or timer.
 *
 *     cc -O2 -o floor-c loadtest/bench/floor.c && ./floor-c 127.0.0.1:8090
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#define MAX_REQUEST (1 << 20)
#define LISTENER_TOKEN (-1)

static const char SSE_HEAD[] =
    "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache, "
    "no-transform\r\nX-Accel-Buffering: no\r\n\r\nretry: 3000\n\n";

/* A connection still sending requests, indexed by descriptor. */
struct pending {
    char *buf;
    size_t len, cap;
    int open;
};

struct topic {
    char *name;
    int *fds;
    size_t len, cap;
};

static struct pending *pending;
static size_t pending_cap;
static struct topic *topics;
static size_t topics_len, topics_cap;
static unsigned long long seq, short_writes;

static void *grow(void *p, size_t *cap, size_t need, size_t size) {
    if (need <= *cap) return p;
    size_t n = *cap ? *cap : 16;
    while (n < need) n *= 2;
    p = realloc(p, n * size);
    if (!p) { perror("realloc"); exit(1); }
    memset((char *)p + *cap * size, 0, (n - *cap) * size);
    *cap = n;
    return p;
}

static struct topic *topic_of(const char *name, size_t n) {
    for (size_t i = 0; i < topics_len; i++)
        if (strlen(topics[i].name) == n && memcmp(topics[i].name, name, n) == 0) return &topics[i];
    topics = grow(topics, &topics_cap, topics_len + 1, sizeof *topics);
    struct topic *t = &topics[topics_len++];
    t->name = strndup(name, n);
    return t;
}

static int send_all(int fd, const char *p, size_t n) {
    while (n) {
        ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) return -1;
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

static void drop_conn(int ep, int fd) {
    epoll_ctl(ep, EPOLL_CTL_DEL, fd, NULL);
    close(fd);
    free(pending[fd].buf);
    memset(&pending[fd], 0, sizeof pending[fd]);
}

/* Renders the event once and sends it to every socket of the topic; writes the answer. */
static int publish(const char *name, size_t name_len, const char *body, size_t body_len, char *answer,
                   size_t answer_cap) {
    seq++;
    static char *frame;
    static size_t frame_cap;
    frame = grow(frame, &frame_cap, body_len + 64, 1);
    int head = snprintf(frame, frame_cap, "id: %llu\nevent: progress\ndata: ", seq);
    memcpy(frame + head, body, body_len);
    memcpy(frame + head + body_len, "\n\n", 2);
    size_t len = (size_t)head + body_len + 2;
    unsigned long long delivered = 0;
    struct topic *t = topic_of(name, name_len);
    size_t kept = 0;
    for (size_t i = 0; i < t->len; i++) {
        int fd = t->fds[i];
        if (send(fd, frame, len, MSG_NOSIGNAL | MSG_DONTWAIT) == (ssize_t)len) {
            delivered++;
            t->fds[kept++] = fd;
        } else {
            short_writes++;
            close(fd);
        }
    }
    t->len = kept;
    return snprintf(answer, answer_cap, "{\"id\":\"%llu\",\"delivered\":%llu,\"short_writes\":%llu}", seq,
                    delivered, short_writes);
}

/* Answers every complete request in the connection's buffer; 1 when it subscribed or
 * must close (the caller stops serving it), 0 to keep it. */
static int serve(int ep, int fd) {
    struct pending *c = &pending[fd];
    char chunk[16384];
    for (;;) {
        ssize_t n = recv(fd, chunk, sizeof chunk, MSG_DONTWAIT);
        if (n == 0) { drop_conn(ep, fd); return 1; }
        if (n < 0) {
            if (errno == EINTR) continue;
            if (errno == EAGAIN) break;
            drop_conn(ep, fd);
            return 1;
        }
        c->buf = grow(c->buf, &c->cap, c->len + (size_t)n + 1, 1);
        memcpy(c->buf + c->len, chunk, (size_t)n);
        c->len += (size_t)n;
        if (c->len > MAX_REQUEST) { drop_conn(ep, fd); return 1; }
    }
    for (;;) {
        if (c->len == 0) return 0;
        char *end = memmem(c->buf, c->len, "\r\n\r\n", 4);
        if (!end) return 0;
        size_t head_len = (size_t)(end - c->buf);
        size_t body_len = 0;
        for (char *line = c->buf; line && line < end; line = memchr(line, '\n', (size_t)(end - line))) {
            if (*line == '\n') line++;
            if (strncasecmp(line, "content-length:", 15) == 0) body_len = strtoul(line + 15, NULL, 10);
        }
        size_t used = head_len + 4 + body_len;
        if (c->len < used) return 0;
        char *sp1 = memchr(c->buf, ' ', head_len);
        char *path = sp1 ? sp1 + 1 : c->buf + head_len;
        char *sp2 = memchr(path, ' ', (size_t)(end - path));
        size_t path_len = sp2 ? (size_t)(sp2 - path) : (size_t)(end - path);
        char *q = memchr(path, '?', path_len);
        if (q) path_len = (size_t)(q - path);
        int is_get = strncmp(c->buf, "GET ", 4) == 0, is_post = strncmp(c->buf, "POST ", 5) == 0;
        if (is_get && path_len > 5 && strncmp(path, "/sub/", 5) == 0) {
            struct topic *t = topic_of(path + 5, path_len - 5);
            epoll_ctl(ep, EPOLL_CTL_DEL, fd, NULL);
            free(c->buf);
            memset(c, 0, sizeof *c);
            if (send_all(fd, SSE_HEAD, sizeof SSE_HEAD - 1) < 0) { close(fd); return 1; }
            t->fds = grow(t->fds, &t->cap, t->len + 1, sizeof *t->fds);
            t->fds[t->len++] = fd;
            return 1;
        }
        char answer[256];
        const char *status;
        int answer_len = 0;
        if (is_post && path_len > 5 && strncmp(path, "/pub/", 5) == 0) {
            status = "201 Created";
            answer_len = publish(path + 5, path_len - 5, end + 4, body_len, answer, sizeof answer);
        } else if (path_len == 8 && strncmp(path, "/healthz", 8) == 0) {
            status = "200 OK";
            answer_len = snprintf(answer, sizeof answer, "{\"status\":\"ok\"}");
        } else {
            status = "404 Not Found";
            answer[0] = 0;
        }
        char response[512];
        int n = snprintf(response, sizeof response,
                         "HTTP/1.1 %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s", status,
                         answer_len, answer);
        memmove(c->buf, c->buf + used, c->len - used);
        c->len -= used;
        if (send_all(fd, response, (size_t)n) < 0) { drop_conn(ep, fd); return 1; }
    }
}

int main(int argc, char **argv) {
    const char *listen_at = argc > 1 ? argv[1] : "127.0.0.1:8090";
    char host[64];
    const char *colon = strrchr(listen_at, ':');
    if (!colon || (size_t)(colon - listen_at) >= sizeof host) { fprintf(stderr, "usage: floor-c HOST:PORT\n"); return 64; }
    memcpy(host, listen_at, (size_t)(colon - listen_at));
    host[colon - listen_at] = 0;
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons((unsigned short)atoi(colon + 1))};
    if (inet_pton(AF_INET, host, &addr.sin_addr) != 1 || (ntohl(addr.sin_addr.s_addr) >> 24) != 127) {
        fprintf(stderr, "floor-c listens on loopback only\n");
        return 64;
    }
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0) { rl.rlim_cur = rl.rlim_max; setrlimit(RLIMIT_NOFILE, &rl); }
    int ls = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int one = 1;
    setsockopt(ls, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (bind(ls, (struct sockaddr *)&addr, sizeof addr) < 0 || listen(ls, 4096) < 0) { perror("bind"); return 1; }
    socklen_t alen = sizeof addr;
    getsockname(ls, (struct sockaddr *)&addr, &alen);
    printf("listening on %s:%d\n", host, ntohs(addr.sin_port));
    fflush(stdout);
    int ep = epoll_create1(EPOLL_CLOEXEC);
    struct epoll_event ev = {.events = EPOLLIN, .data.fd = LISTENER_TOKEN};
    epoll_ctl(ep, EPOLL_CTL_ADD, ls, &ev);
    struct epoll_event events[256];
    for (;;) {
        int n = epoll_wait(ep, events, 256, -1);
        if (n < 0) {
            if (errno == EINTR) continue;
            perror("epoll_wait");
            return 1;
        }
        for (int i = 0; i < n; i++) {
            int fd = events[i].data.fd;
            if (fd == LISTENER_TOKEN) {
                for (;;) {
                    int c = accept4(ls, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
                    if (c < 0) break;
                    setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
                    pending = grow(pending, &pending_cap, (size_t)c + 1, sizeof *pending);
                    pending[c].open = 1;
                    struct epoll_event cev = {.events = EPOLLIN, .data.fd = c};
                    if (epoll_ctl(ep, EPOLL_CTL_ADD, c, &cev) < 0) { close(c); pending[c].open = 0; }
                }
                continue;
            }
            if ((size_t)fd < pending_cap && pending[fd].open) serve(ep, fd);
        }
    }
}
