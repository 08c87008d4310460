/*
 * A fast Modbus TCP slave for the benchmarks, built on libmodbus: many clients on one port,
 * one thread, poll(2), so the device side is never what limits a run.
 *
 * Usage: bench_slave PORT K   (PORT 0 picks a free port). Prints "listening PORT" once it
 * accepts connections; SIGTERM stops it.
 *
 * Holding registers (one map shared by every client; each connection is one device):
 *   0..K-1    uint16, all rewritten before every read answer (counter + address), so every
 *             poll changes every value and report-by-exception still reports them all
 *   K..K+1    uint32 (high word first): the time the answer was served, in microseconds
 *             since the epoch modulo 2^31 (the latency sentinel)
 *   K+2       a plain register for command writes (function 6)
 *   K+3..499  zero
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <modbus.h>

#define MAX_CLIENTS 8192
#define REGISTERS 500

static volatile sig_atomic_t stopping = 0;

static void on_term(int sig)
{
    (void)sig;
    stopping = 1;
}

static void refresh(uint16_t *reg, int k, uint32_t counter)
{
    struct timespec now;
    for (int i = 0; i < k; i++)
        reg[i] = (uint16_t)(counter + (uint32_t)i);
    clock_gettime(CLOCK_REALTIME, &now);
    uint64_t us = (uint64_t)now.tv_sec * 1000000u + (uint64_t)now.tv_nsec / 1000u;
    uint32_t served = (uint32_t)(us & 0x7FFFFFFFu); /* fits a model int (int32) */
    reg[k] = (uint16_t)(served >> 16);
    reg[k + 1] = (uint16_t)(served & 0xFFFF);
}

int main(int argc, char **argv)
{
    if (argc != 3) {
        fprintf(stderr, "usage: %s PORT K\n", argv[0]);
        return 2;
    }
    int port = atoi(argv[1]);
    int k = atoi(argv[2]);
    if (k < 1 || k > REGISTERS - 3) {
        fprintf(stderr, "K must be 1..%d\n", REGISTERS - 3);
        return 2;
    }
    signal(SIGTERM, on_term);
    signal(SIGINT, on_term);
    signal(SIGPIPE, SIG_IGN);

    modbus_t *ctx = modbus_new_tcp("127.0.0.1", port);
    modbus_mapping_t *map = modbus_mapping_new(0, 0, REGISTERS, 0);
    if (ctx == NULL || map == NULL) {
        fprintf(stderr, "libmodbus: %s\n", modbus_strerror(errno));
        return 1;
    }
    int server = socket(AF_INET, SOCK_STREAM, 0);
    int yes = 1;
    setsockopt(server, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof yes);
    struct sockaddr_in addr = {0};
    addr.sin_family = AF_INET;
    addr.sin_port = htons((uint16_t)port);
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(server, (struct sockaddr *)&addr, sizeof addr) != 0 || listen(server, 4096) != 0) {
        perror("bind/listen");
        return 1;
    }
    socklen_t len = sizeof addr;
    getsockname(server, (struct sockaddr *)&addr, &len);
    printf("listening %d\n", ntohs(addr.sin_port));
    fflush(stdout);

    static struct pollfd fds[MAX_CLIENTS + 1];
    int nfds = 1;
    fds[0].fd = server;
    fds[0].events = POLLIN;
    uint8_t query[MODBUS_TCP_MAX_ADU_LENGTH];
    int header = modbus_get_header_length(ctx);
    uint32_t counter = 0;

    while (!stopping) {
        int ready = poll(fds, (nfds_t)nfds, 500);
        if (ready < 0) {
            if (errno == EINTR)
                continue;
            perror("poll");
            break;
        }
        if (fds[0].revents & POLLIN) {
            int client = accept(server, NULL, NULL);
            if (client >= 0) {
                if (nfds > MAX_CLIENTS) {
                    close(client);
                } else {
                    setsockopt(client, IPPROTO_TCP, TCP_NODELAY, &yes, sizeof yes);
                    fds[nfds].fd = client;
                    fds[nfds].events = POLLIN;
                    fds[nfds].revents = 0;
                    nfds++;
                }
            }
        }
        for (int i = 1; i < nfds; i++) {
            if (!(fds[i].revents & (POLLIN | POLLHUP | POLLERR)))
                continue;
            fds[i].revents = 0;
            modbus_set_socket(ctx, fds[i].fd);
            int rc = modbus_receive(ctx, query);
            if (rc > 0) {
                if (query[header] == MODBUS_FC_READ_HOLDING_REGISTERS)
                    refresh(map->tab_registers, k, ++counter);
                modbus_reply(ctx, query, rc, map);
            } else if (rc < 0) {
                close(fds[i].fd);
                fds[i] = fds[nfds - 1];
                nfds--;
                i--;
            }
        }
    }
    for (int i = 0; i < nfds; i++)
        close(fds[i].fd);
    modbus_mapping_free(map);
    modbus_free(ctx);
    return 0;
}
