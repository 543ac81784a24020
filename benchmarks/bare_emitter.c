/* The emulator's floor (benchmarks/emulator_throughput.py --floor): a TGI-like streaming server in
 * plain C with nothing per token but the chunk's bytes, one send(2) and a lateness stamp. One
 * thread, one epoll set, one timerfd armed on a tick grid, two FIFOs of due tokens (first tokens
 * at arrival + TTFT, next tokens at due + ITL: each FIFO is in due order, so the earlier head is
 * the next token, with no heap). It answers the benchmark's clients as the emulator does (HTTP/1.1
 * keep-alive, chunked SSE events, the final event with generated_text, then the last chunk) and
 * parses nothing but the request's head and content-length. Whatever the emulator costs beyond
 * this is Python, HTTP and bookkeeping; what this costs is the kernel's send path and the timer.
 *
 *   bare_emitter PORT_FILE TTFT_US ITL_US TOKENS TICK_US T_START_NS T_END_NS OUT_JSON
 *
 * It listens on 127.0.0.1 (an ephemeral port, written to PORT_FILE), stamps the lateness (write
 * time - due time) of every token written in [T_START_NS, T_END_NS) of CLOCK_MONOTONIC, writes
 * the window's counts and percentiles to OUT_JSON once T_END_NS has passed, and serves until it
 * is killed. Not part of the product: a benchmark's yardstick. */
#define _GNU_SOURCE
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

#define MAXFD 65536
#define NBUCKET 20000 /* lateness histogram: 1 us buckets up to 4 ms, then 64 us buckets to ~1 s */

typedef struct { int64_t due; int fd; uint32_t gen; int k; } tok_t;
typedef struct { tok_t *q; size_t head, tail, cap; } fifo_t;
typedef struct { char buf[4096]; size_t n; uint32_t gen; } conn_t;

static conn_t *conns;
static fifo_t first_q, next_q;
static int64_t itl_ns, ttft_ns, tick_ns, t_start, t_end;
static int tokens;
static uint64_t hist[NBUCKET], sent, errors, requests, maxlate;

static int64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static void push(fifo_t *f, tok_t t) {
    if (f->tail - f->head == f->cap) {
        size_t nc = f->cap ? 2 * f->cap : 4096;
        tok_t *q = malloc(nc * sizeof(tok_t));
        for (size_t i = 0; i < f->tail - f->head; i++) q[i] = f->q[(f->head + i) % f->cap];
        f->tail -= f->head; f->head = 0; free(f->q); f->q = q; f->cap = nc;
    }
    f->q[f->tail++ % f->cap] = t;
}

static tok_t *peek(fifo_t *f) { return f->tail == f->head ? NULL : &f->q[f->head % f->cap]; }

static void stamp(int64_t now, int64_t due) {
    if (now < t_start || now >= t_end) return;
    uint64_t us = now > due ? (uint64_t)(now - due) / 1000 : 0;
    if (us > maxlate) maxlate = us;
    size_t b = us < 4000 ? us : 4000 + (us - 4000) / 64;
    hist[b < NBUCKET ? b : NBUCKET - 1]++;   /* the last bucket holds everything later; max is exact */
    sent++;
}

static uint64_t bucket_us(size_t b) { return b < 4000 ? b : 4000 + (b - 4000) * 64; }

static uint64_t quantile(double q) {
    uint64_t want = (uint64_t)(q * sent + 0.5), c = 0;
    for (size_t b = 0; b < NBUCKET; b++) { c += hist[b]; if (c >= want && c) return bucket_us(b); }
    return maxlate;
}

/* the token event, as one HTTP chunk (the emulator's layout and size); the last one carries the
 * generated text and the terminating chunk */
static int token_chunk(char *out, int k) {
    char ev[256];
    int n = snprintf(ev, sizeof ev,
                     "data:{\"index\":%d,\"token\":{\"id\":%d,\"text\":\" tok\",\"logprob\":-0.5,\"special\":false},"
                     "\"generated_text\":%s,\"details\":null}\n\n", k + 1, 1000 + k % 97,
                     k + 1 == tokens ? "\"the generated text\"" : "null");
    int m = sprintf(out, "%x\r\n", n);
    memcpy(out + m, ev, n);
    m += n;
    memcpy(out + m, "\r\n", 2);
    m += 2;
    if (k + 1 == tokens) { memcpy(out + m, "0\r\n\r\n", 5); m += 5; }
    return m;
}

static const char HEAD[] = "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n"
                           "cache-control: no-cache\r\n\r\n";

static void emit(tok_t *t, int64_t now) {
    char out[512];
    int m = 0;
    if (conns[t->fd].gen != t->gen) return;          /* the connection closed meanwhile */
    if (t->k == 0) { memcpy(out, HEAD, sizeof HEAD - 1); m = sizeof HEAD - 1; }
    m += token_chunk(out + m, t->k);
    if (send(t->fd, out, m, MSG_NOSIGNAL | MSG_DONTWAIT) != m) errors++;
    stamp(now, t->due);
    if (t->k + 1 < tokens) push(&next_q, (tok_t){t->due + itl_ns, t->fd, t->gen, t->k + 1});
}

static void arm(int tfd) {
    tok_t *a = peek(&first_q), *b = peek(&next_q);
    int64_t due = a && (!b || a->due < b->due) ? a->due : b ? b->due : 0;
    struct itimerspec its = {0};
    if (due) {
        due = (due + tick_ns - 1) / tick_ns * tick_ns;   /* never early, at most a tick late */
        its.it_value.tv_sec = due / 1000000000LL;
        its.it_value.tv_nsec = due % 1000000000LL;
    }
    timerfd_settime(tfd, TFD_TIMER_ABSTIME, &its, NULL);
}

static void drain(void) {
    int64_t now = now_ns();
    for (;;) {
        tok_t *a = peek(&first_q), *b = peek(&next_q);
        tok_t *t = a && (!b || a->due < b->due) ? a : b;
        if (!t || t->due > now) return;
        tok_t c = *t;
        if (t == a) first_q.head++; else next_q.head++;
        emit(&c, now);
        now = now_ns();
    }
}

/* take every whole request in the connection's buffer (the clients send one at a time) */
static void on_request_bytes(int fd) {
    conn_t *c = &conns[fd];
    for (;;) {
        c->buf[c->n] = 0;
        char *end = strstr(c->buf, "\r\n\r\n");
        if (!end) return;
        char *cl = strcasestr(c->buf, "content-length:");
        size_t body = cl && cl < end ? strtoul(cl + 15, NULL, 10) : 0;
        size_t whole = (size_t)(end + 4 - c->buf) + body;
        if (c->n < whole) return;
        int64_t now = now_ns();
        if (now >= t_start && now < t_end) requests++;
        push(&first_q, (tok_t){now + ttft_ns, fd, c->gen, 0});
        memmove(c->buf, c->buf + whole, c->n - whole);
        c->n -= whole;
    }
}

static void write_json(const char *path) {
    FILE *f = fopen(path, "w");
    if (!f) return;
    fprintf(f, "{\"tokens_sent\": %llu, \"requests\": %llu, \"send_errors\": %llu, \"lateness_us\": {\"p50\": %llu, "
               "\"p99\": %llu, \"p999\": %llu, \"max\": %llu}}\n",
            (unsigned long long)sent, (unsigned long long)requests, (unsigned long long)errors,
            (unsigned long long)quantile(0.5), (unsigned long long)quantile(0.99),
            (unsigned long long)quantile(0.999), (unsigned long long)maxlate);
    fclose(f);
}

int main(int argc, char **argv) {
    if (argc != 9) { fprintf(stderr, "usage: see the source\n"); return 2; }
    ttft_ns = atoll(argv[2]) * 1000; itl_ns = atoll(argv[3]) * 1000; tokens = atoi(argv[4]);
    tick_ns = atoll(argv[5]) * 1000; t_start = atoll(argv[6]); t_end = atoll(argv[7]);
    conns = calloc(MAXFD, sizeof(conn_t));
    int ls = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0), one = 1;
    setsockopt(ls, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t sl = sizeof sa;
    if (bind(ls, (struct sockaddr *)&sa, sizeof sa) || listen(ls, 4096) || getsockname(ls, (struct sockaddr *)&sa, &sl)) {
        perror("listen"); return 1;
    }
    int ep = epoll_create1(0), tfd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK);
    struct epoll_event ev = {.events = EPOLLIN, .data.fd = ls};
    epoll_ctl(ep, EPOLL_CTL_ADD, ls, &ev);
    ev.data.fd = tfd;
    epoll_ctl(ep, EPOLL_CTL_ADD, tfd, &ev);
    char tmp[4096];
    snprintf(tmp, sizeof tmp, "%s.tmp", argv[1]);
    FILE *pf = fopen(tmp, "w");
    fprintf(pf, "{\"port\": %d}\n", ntohs(sa.sin_port));
    fclose(pf);
    rename(tmp, argv[1]);
    int written = 0;
    struct epoll_event evs[256];
    for (;;) {
        int n = epoll_wait(ep, evs, 256, 100);
        for (int i = 0; i < n; i++) {
            int fd = evs[i].data.fd;
            if (fd == ls) {
                int c;
                while ((c = accept4(ls, NULL, NULL, SOCK_NONBLOCK)) >= 0) {
                    if (c >= MAXFD) { close(c); continue; }
                    setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
                    conns[c].n = 0; conns[c].gen++;
                    struct epoll_event ce = {.events = EPOLLIN, .data.fd = c};
                    epoll_ctl(ep, EPOLL_CTL_ADD, c, &ce);
                }
            } else if (fd == tfd) {
                uint64_t x;
                if (read(tfd, &x, sizeof x) < 0 && errno != EAGAIN) perror("timerfd");
            } else {
                conn_t *c = &conns[fd];
                ssize_t r = recv(fd, c->buf + c->n, sizeof c->buf - 1 - c->n, 0);
                if (r <= 0) {
                    if (r < 0 && errno == EAGAIN) continue;
                    epoll_ctl(ep, EPOLL_CTL_DEL, fd, NULL);
                    c->gen++;
                    close(fd);
                    continue;
                }
                c->n += r;
                on_request_bytes(fd);
            }
        }
        drain();
        arm(tfd);
        if (!written && now_ns() >= t_end) { write_json(argv[8]); written = 1; }
    }
}
