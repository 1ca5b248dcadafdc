/*
 * A lean download client for the benchmark: one WebSocket, bytes counted as
 * they arrive, nothing else. It shows whether the Node load client is the
 * limit of the download figure (docs/performance.md): it spends far less
 * CPU per byte than Node, so a proxy that is not the limit goes faster
 * with it, and the ratio between two proxies moves.
 *
 *   wsdownload HOST PORT PATH SECONDS
 *
 * Counts every byte after the handshake (frame headers included: 10 bytes
 * in 124 KiB for txvnc, 10 in 64 KiB or so for websockify) for SECONDS
 * after a 0.5 s warm-up; prints {"bytes_per_s": N, "seconds": S,
 * "client_cpu_s": C}.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec / 1e9;
}

static double cpu(void) {
    struct rusage u;
    getrusage(RUSAGE_SELF, &u);
    return u.ru_utime.tv_sec + u.ru_utime.tv_usec / 1e6 + u.ru_stime.tv_sec + u.ru_stime.tv_usec / 1e6;
}

int main(int argc, char **argv) {
    if (argc != 5) {
        fprintf(stderr, "usage: wsdownload HOST PORT PATH SECONDS\n");
        return 2;
    }
    double seconds = atof(argv[4]);
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(atoi(argv[2]))};
    inet_pton(AF_INET, argv[1], &a.sin_addr);
    if (connect(fd, (struct sockaddr *)&a, sizeof a) < 0) {
        perror("connect");
        return 1;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    char req[4096];
    int n = snprintf(req, sizeof req,
                     "GET %s HTTP/1.1\r\nHost: %s:%s\r\nUpgrade: websocket\r\n"
                     "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                     "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: binary\r\n"
                     "Origin: http://%s:%s\r\n\r\n",
                     argv[3], argv[1], argv[2], argv[1], argv[2]);
    if (write(fd, req, n) != n) {
        perror("write");
        return 1;
    }
    static char buf[4 << 20];
    size_t have = 0;
    char *end = NULL;
    while (!end) {
        ssize_t r = read(fd, buf + have, sizeof buf - have - 1);
        if (r <= 0) {
            fprintf(stderr, "handshake: connection closed\n");
            return 1;
        }
        have += r;
        buf[have] = 0;
        end = strstr(buf, "\r\n\r\n");
    }
    if (strncmp(buf, "HTTP/1.1 101", 12) != 0) {
        fprintf(stderr, "handshake refused: %.40s\n", buf);
        return 1;
    }
    double t0 = now(), start = t0 + 0.5, stop = start + seconds, c0 = 0;
    unsigned long long total = 0;
    int counting = 0;
    for (;;) {
        ssize_t r = read(fd, buf, sizeof buf);
        if (r <= 0) {
            fprintf(stderr, "connection closed\n");
            return 1;
        }
        double t = now();
        if (!counting && t >= start) {
            counting = 1;
            start = t;
            stop = t + seconds;
            c0 = cpu();
            total = 0;
        } else if (counting) {
            total += r;
            if (t >= stop) {
                double s = t - start;
                printf("{\"bytes_per_s\": %.0f, \"seconds\": %.3f, \"client_cpu_s\": %.3f}\n",
                       total / s, s, cpu() - c0);
                return 0;
            }
        }
    }
}
