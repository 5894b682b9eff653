/* The API process ExaBGP runs, in C: bridge.py's relay, line for line the same protocol and behaviour,
 * in about 1 MB instead of an interpreter's 10 (ExaBGP runs one per node).
 *
 *     calico-bgp-bridge --socket PATH      (built by `make -s -C calico_bgp/speaker`; speaker.py picks it)
 *
 * - ExaBGP writes JSON messages and command acks to our stdin; we relay them to the agent's unix
 *   socket. Stdin is read by its own thread from start to EOF whatever happens to the agent: ExaBGP
 *   blocks (all sessions with it) once ~64 KiB of unread acks fill the pipe. While no agent is
 *   connected, lines are kept up to MAX_BUFFERED_LINES, the oldest dropped (counted).
 * - Each connection starts with `bridge hello pid=P exabgp=E dropped=N` (E: our parent, ExaBGP).
 * - Lines the agent sends are ExaBGP commands, written to our stdout. Acks (`done`/`error`) answer
 *   commands in order: those owed for a previous connection's commands are not passed to the next
 *   one (they would answer its commands), whether already read or still to come.
 * - The socket is tried every 20 ms for the first 2 s (an agent that started ExaBGP early listens a
 *   moment after we are up), then backing off to 1 s; a lost agent is waited for the same way.
 * - Stdin's EOF (ExaBGP exits): what is pending goes to the agent, then we exit 0.
 * tests/unit/test_speaker_bridge.py runs the same scenarios against both.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#define MAX_BUFFERED_LINES 500000
#define POLL_S 0.02
#define FAST_FOR_S 2.0
#define CHUNK 65536

struct line {
    struct line *next;
    size_t len;
    char data[];
};

static struct line *head, *tail;
static long count, dropped, outstanding, owed_old, stale_acks, connections, generation;
static int eof, connection_closed;
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_mutex_t out_mu = PTHREAD_MUTEX_INITIALIZER; /* whole lines to ExaBGP, one writer at a time */
static pthread_cond_t cond = PTHREAD_COND_INITIALIZER;
static const char *socket_path;

static void die(const char *what) {
    fprintf(stderr, "bridge: %s: %s\n", what, strerror(errno));
    exit(1);
}

static int is_ack(const char *s, size_t n) { /* n excludes the newline */
    return (n == 4 && !memcmp(s, "done", 4)) || (n == 5 && !memcmp(s, "error", 5));
}

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void sleep_s(double s) {
    struct timespec ts = {(time_t)s, (long)((s - (time_t)s) * 1e9)};
    while (nanosleep(&ts, &ts) && errno == EINTR) {
    }
}

static int write_all(int fd, const char *p, size_t n, int on_socket) {
    while (n) {
        ssize_t w = on_socket ? send(fd, p, n, MSG_NOSIGNAL) : write(fd, p, n);
        if (w < 0) {
            if (errno == EINTR) continue;
            return -1;
        }
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

/* ExaBGP -> agent: one line (with its newline) read from stdin; called with `mu` held. */
static void take_line(const char *s, size_t n) {
    if (is_ack(s, n - 1)) {
        if (owed_old) {
            owed_old--;
            stale_acks++;
            return;
        }
        if (outstanding) outstanding--;
    }
    if (count >= MAX_BUFFERED_LINES) {
        struct line *old = head;
        head = old->next;
        if (!head) tail = NULL;
        free(old);
        count--;
        dropped++;
    }
    struct line *l = malloc(sizeof *l + n);
    if (!l) die("malloc");
    l->next = NULL;
    l->len = n;
    memcpy(l->data, s, n);
    if (tail) tail->next = l; else head = l;
    tail = l;
    count++;
    pthread_cond_signal(&cond);
}

static void *read_stdin(void *arg) {
    (void)arg;
    size_t cap = CHUNK * 2, have = 0;
    char *buf = malloc(cap);
    if (!buf) die("malloc");
    for (;;) {
        if (cap - have < CHUNK) {
            cap *= 2;
            if (!(buf = realloc(buf, cap))) die("realloc");
        }
        ssize_t r = read(0, buf + have, CHUNK);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) break;
        have += (size_t)r;
        size_t start = 0;
        pthread_mutex_lock(&mu);
        for (char *nl; (nl = memchr(buf + start, '\n', have - start));) {
            size_t end = (size_t)(nl - buf) + 1;
            take_line(buf + start, end - start);
            start = end;
        }
        pthread_mutex_unlock(&mu);
        memmove(buf, buf + start, have - start);
        have -= start;
    }
    pthread_mutex_lock(&mu);
    if (have) { /* a last line without its newline gets one */
        buf[have++] = '\n';
        take_line(buf, have);
    }
    eof = 1;
    pthread_cond_broadcast(&cond);
    pthread_mutex_unlock(&mu);
    free(buf);
    return NULL;
}

struct connection {
    int fd;
    long generation;
};

/* agent -> ExaBGP: commands, each counted as owed an ack before ExaBGP can see it. */
static void *commands(void *arg) {
    struct connection *c = arg;
    char *buf = malloc(CHUNK + 1);
    size_t have = 0;
    if (!buf) die("malloc");
    for (;;) {
        ssize_t r = recv(c->fd, buf + have, CHUNK - have, 0);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) break;
        have += (size_t)r;
        size_t whole = have, lines = 0;
        while (whole && buf[whole - 1] != '\n') whole--;
        if (!whole && have == CHUNK) { /* a line longer than the buffer: passed on in pieces */
            whole = have;
            lines = 0;
        } else {
            for (size_t i = 0; i < whole; i++) lines += buf[i] == '\n';
        }
        if (!whole) continue;
        pthread_mutex_lock(&mu);
        outstanding += (long)lines;
        pthread_mutex_unlock(&mu);
        pthread_mutex_lock(&out_mu);
        write_all(1, buf, whole, 0); /* ExaBGP gone: its EOF on our stdin ends us */
        pthread_mutex_unlock(&out_mu);
        memmove(buf, buf + whole, have - whole);
        have -= whole;
    }
    if (have) {
        buf[have++] = '\n';
        pthread_mutex_lock(&mu);
        outstanding++;
        pthread_mutex_unlock(&mu);
        pthread_mutex_lock(&out_mu);
        write_all(1, buf, have, 0);
        pthread_mutex_unlock(&out_mu);
    }
    pthread_mutex_lock(&mu);
    if (c->generation == generation) {
        connection_closed = 1;
        pthread_cond_broadcast(&cond);
    }
    pthread_mutex_unlock(&mu);
    free(buf);
    close(c->fd);
    free(c);
    return NULL;
}

/* Pending lines to the agent until the connection fails or closes, or stdin ends (flushed first). */
static void forward(int fd) {
    for (;;) {
        pthread_mutex_lock(&mu);
        while (!head && !eof && !connection_closed) pthread_cond_wait(&cond, &mu);
        if (connection_closed) {
            pthread_mutex_unlock(&mu);
            return;
        }
        struct line *batch = head;
        head = tail = NULL;
        count = 0;
        int done = eof;
        pthread_mutex_unlock(&mu);
        if (batch) {
            size_t total = 0;
            for (struct line *l = batch; l; l = l->next) total += l->len;
            char *out = malloc(total);
            if (!out) die("malloc");
            size_t at = 0;
            struct line *last = batch;
            long n = 0;
            for (struct line *l = batch; l; l = l->next, n++) {
                memcpy(out + at, l->data, l->len);
                at += l->len;
                last = l;
            }
            int failed = write_all(fd, out, total, 1);
            free(out);
            if (failed) { /* kept for the next connection, ahead of what came meanwhile */
                pthread_mutex_lock(&mu);
                last->next = head;
                if (!head) tail = last;
                head = batch;
                count += n;
                pthread_mutex_unlock(&mu);
                return;
            }
            while (batch) {
                struct line *next = batch->next;
                free(batch);
                batch = next;
            }
        }
        if (done) return;
    }
}

static int connect_agent(void) {
    double delay = POLL_S, fast_until = now() + FAST_FOR_S;
    struct sockaddr_un addr = {.sun_family = AF_UNIX};
    strncpy(addr.sun_path, socket_path, sizeof addr.sun_path - 1);
    for (;;) {
        pthread_mutex_lock(&mu);
        int ended = eof;
        pthread_mutex_unlock(&mu);
        if (ended) return -1;
        int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0) die("socket");
        if (connect(fd, (struct sockaddr *)&addr, sizeof addr) == 0) return fd;
        close(fd);
        sleep_s(delay);
        if (now() >= fast_until) delay = delay * 2 < 1.0 ? delay * 2 : 1.0;
    }
}

/* A new connection: acks still owed to the previous one's commands are not for this one. */
static long start_connection(void) {
    pthread_mutex_lock(&mu);
    long was_dropped = dropped;
    dropped = 0;
    connection_closed = 0;
    generation++;
    if (connections) {
        struct line **p = &head;
        tail = NULL;
        while (*p) {
            struct line *l = *p;
            if (is_ack(l->data, l->len - 1)) {
                *p = l->next;
                free(l);
                count--;
                stale_acks++;
            } else {
                tail = l;
                p = &l->next;
            }
        }
        owed_old += outstanding;
        outstanding = 0;
    }
    connections++;
    pthread_mutex_unlock(&mu);
    return was_dropped;
}

static const char USAGE[] = "usage: calico-bgp-bridge --socket PATH";

int main(int argc, char **argv) {
    if (argc == 2 && (!strcmp(argv[1], "-h") || !strcmp(argv[1], "--help"))) {
        printf("%s\nThe API process ExaBGP runs: relays its output to the agent over a unix socket, and back.\n", USAGE);
        return 0;
    }
    if (argc == 2 && !strncmp(argv[1], "--socket=", 9)) socket_path = argv[1] + 9;
    else if (argc == 3 && !strcmp(argv[1], "--socket")) socket_path = argv[2];
    if (!socket_path || !*socket_path) {
        fprintf(stderr, "%s\nbridge: error: %s\n", USAGE, socket_path ? "--socket: an empty path" : "expected --socket PATH");
        return 2;
    }
    if (strlen(socket_path) >= sizeof((struct sockaddr_un *)0)->sun_path) {
        fprintf(stderr, "%s\nbridge: error: --socket: a path longer than a unix socket takes\n", USAGE);
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    pthread_attr_t detached;
    pthread_attr_init(&detached);
    pthread_attr_setdetachstate(&detached, PTHREAD_CREATE_DETACHED);
    pthread_attr_setstacksize(&detached, 256 * 1024);
    pthread_t t;
    if (pthread_create(&t, &detached, read_stdin, NULL)) die("thread");
    for (;;) {
        int fd = connect_agent();
        if (fd < 0) return 0;
        long was_dropped = start_connection();
        char hello[128];
        int n = snprintf(hello, sizeof hello, "bridge hello pid=%d exabgp=%d dropped=%ld\n",
                         (int)getpid(), (int)getppid(), was_dropped);
        if (write_all(fd, hello, (size_t)n, 1)) {
            close(fd);
            continue;
        }
        struct connection *c = malloc(sizeof *c);
        if (!c) die("malloc");
        c->fd = fd;
        pthread_mutex_lock(&mu);
        c->generation = generation;
        pthread_mutex_unlock(&mu);
        if (pthread_create(&t, &detached, commands, c)) die("thread");
        forward(fd);
        pthread_mutex_lock(&mu);
        int finished = eof && !head;
        pthread_mutex_unlock(&mu);
        shutdown(fd, SHUT_RDWR); /* ends the commands thread, which closes the socket */
        if (finished) return 0;
    }
}
