/*
 * A real Modbus TCP slave for the driver tests, built on libmodbus.
 *
 * Usage: slave PORT   (0 picks a free port). Prints "listening PORT" once it accepts
 * connections, then serves clients one after another, forever (SIGTERM stops it).
 *        slave rtu DEVICE BAUD PARITY UNIT   (PARITY N, E or O; 8 data bits, 1 stop bit)
 * serves the same map as RTU unit UNIT on a serial DEVICE; prints "ready DEVICE" once the
 * line is open. Frames for other units are ignored, broken frames (bad CRC) skipped.
 *
 * Preloaded map; tests/modbus_peers.py (SLAVE_VALUES) mirrors it, keep both in step:
 *   coils 0..63             1 at 0, 2, 3, 10, 63
 *   discrete inputs 0..63   1 at 1, 5, 7
 *   holding registers 0..299
 *     0      uint16  1234
 *     1      int16   -2
 *     2..3   float32 21.75          big word order (high word first)
 *     4..5   float32 -1234.5        little word order (low word first)
 *     6..7   int32   -123456        big
 *     8..9   uint32  3000000000     big
 *     10..11 int32   -123456        little
 *     12..15 float64 1234.5678      big
 *     16..19 int64   -5             big
 *     20..23 uint64  0x0102030405060708 little
 *     30..199  3 * address
 *   holding registers 200..299: other layouts (bytes A B C D, A most significant)
 *     200..201 float32 21.75          BADC (words in order, bytes swapped)
 *     202..203 float32 21.75          DCBA (words reversed, bytes swapped)
 *     204..205 int32   -123456        BADC
 *     206..209 float64 1234.5678      DCBA
 *     210..213 uint64  0x0102030405060708 BADC
 *     214      int16   -2             bytes swapped
 *     215      uint16  0x1234         bytes swapped (0x3412 on the wire)
 *     216      bits    0xA5C3         bits 0 1 6 7 8 10 13 15 set
 *     220..227 string  "CityTwin PS-1"  ascii, NUL padded, first character high byte
 *     228..233 string  "Pumpe Süd"      utf-8, space padded, bytes swapped
 *     240..299 0
 *   input registers 0..99   1000 + address, except
 *     50..51 float32 -0.5           big
 *     52..53 float32 3.14159274f    little
 * Addresses outside these ranges answer exception 2 (illegal data address).
 */
#include <arpa/inet.h>
#include <errno.h>
#include <sys/select.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <modbus.h>

static void put32(uint16_t *reg, uint32_t value, int little)
{
    uint16_t high = (uint16_t)(value >> 16), low = (uint16_t)(value & 0xFFFF);
    reg[0] = little ? low : high;
    reg[1] = little ? high : low;
}

static void put64(uint16_t *reg, uint64_t value, int little)
{
    for (int i = 0; i < 4; i++) {
        uint16_t word = (uint16_t)(value >> (48 - 16 * i));
        reg[little ? 3 - i : i] = word;
    }
}

/* Lay out the n bytes of value (most significant first) in n / 2 registers. */
static void put_layout(uint16_t *reg, uint64_t value, int n, int word_little, int byte_little)
{
    for (int i = 0; i < n / 2; i++) {
        uint8_t high = (uint8_t)(value >> (8 * (n - 1 - 2 * i)));
        uint8_t low = (uint8_t)(value >> (8 * (n - 2 - 2 * i)));
        uint16_t word = byte_little ? (uint16_t)(low << 8 | high) : (uint16_t)(high << 8 | low);
        reg[word_little ? n / 2 - 1 - i : i] = word;
    }
}

/* Two characters per register, padded with pad to count registers. */
static void put_string(uint16_t *reg, const char *text, int count, char pad, int byte_little)
{
    size_t len = strlen(text);
    for (int i = 0; i < count; i++) {
        uint8_t first = (size_t)(2 * i) < len ? (uint8_t)text[2 * i] : (uint8_t)pad;
        uint8_t second = (size_t)(2 * i + 1) < len ? (uint8_t)text[2 * i + 1] : (uint8_t)pad;
        reg[i] = byte_little ? (uint16_t)(second << 8 | first) : (uint16_t)(first << 8 | second);
    }
}

static uint32_t float_bits(float value)
{
    uint32_t bits;
    memcpy(&bits, &value, sizeof bits);
    return bits;
}

static uint64_t double_bits(double value)
{
    uint64_t bits;
    memcpy(&bits, &value, sizeof bits);
    return bits;
}

static void preload(modbus_mapping_t *map)
{
    const int coils[] = {0, 2, 3, 10, 63};
    const int inputs[] = {1, 5, 7};
    for (size_t i = 0; i < sizeof coils / sizeof coils[0]; i++)
        map->tab_bits[coils[i]] = 1;
    for (size_t i = 0; i < sizeof inputs / sizeof inputs[0]; i++)
        map->tab_input_bits[inputs[i]] = 1;

    uint16_t *hr = map->tab_registers;
    hr[0] = 1234;
    hr[1] = (uint16_t)(int16_t)-2;
    put32(hr + 2, float_bits(21.75f), 0);
    put32(hr + 4, float_bits(-1234.5f), 1);
    put32(hr + 6, (uint32_t)(int32_t)-123456, 0);
    put32(hr + 8, 3000000000u, 0);
    put32(hr + 10, (uint32_t)(int32_t)-123456, 1);
    put64(hr + 12, double_bits(1234.5678), 0);
    put64(hr + 16, (uint64_t)(int64_t)-5, 0);
    put64(hr + 20, 0x0102030405060708ull, 1);
    for (int a = 30; a < 200; a++)
        hr[a] = (uint16_t)(3 * a);
    put_layout(hr + 200, float_bits(21.75f), 4, 0, 1);
    put_layout(hr + 202, float_bits(21.75f), 4, 1, 1);
    put_layout(hr + 204, (uint32_t)(int32_t)-123456, 4, 0, 1);
    put_layout(hr + 206, double_bits(1234.5678), 8, 1, 1);
    put_layout(hr + 210, 0x0102030405060708ull, 8, 0, 1);
    put_layout(hr + 214, (uint16_t)(int16_t)-2, 2, 0, 1);
    put_layout(hr + 215, 0x1234, 2, 0, 1);
    hr[216] = 0xA5C3;
    put_string(hr + 220, "CityTwin PS-1", 8, '\0', 0);
    put_string(hr + 228, "Pumpe S\xC3\xBC" "d", 6, ' ', 1);

    uint16_t *ir = map->tab_input_registers;
    for (int a = 0; a < 100; a++)
        ir[a] = (uint16_t)(1000 + a);
    put32(ir + 50, float_bits(-0.5f), 0);
    put32(ir + 52, float_bits(3.14159274f), 1);
}

static int serve_rtu(const char *device, int baud, char parity, int unit)
{
    modbus_t *ctx = modbus_new_rtu(device, baud, parity, 8, 1);
    modbus_mapping_t *map = modbus_mapping_new_start_address(0, 64, 0, 64, 0, 300, 0, 100);
    if (ctx == NULL || map == NULL) {
        fprintf(stderr, "slave: cannot allocate: %s\n", modbus_strerror(errno));
        return 1;
    }
    preload(map);
    if (modbus_set_slave(ctx, unit) == -1 || modbus_connect(ctx) == -1) {
        fprintf(stderr, "slave: cannot open %s: %s\n", device, modbus_strerror(errno));
        return 1;
    }
    printf("ready %s\n", device);
    fflush(stdout);
    for (;;) {
        uint8_t query[MODBUS_RTU_MAX_ADU_LENGTH];
        int rc = modbus_receive(ctx, query);
        if (rc > 0)
            modbus_reply(ctx, query, rc, map);
        else if (rc == -1 && errno != EMBBADCRC && errno != EMBBADDATA && errno != ETIMEDOUT)
            usleep(10000); /* the line is gone (pty peer closed): do not spin */
    }
}

int main(int argc, char **argv)
{
    if (argc == 6 && strcmp(argv[1], "rtu") == 0)
        return serve_rtu(argv[2], atoi(argv[3]), argv[4][0], atoi(argv[5]));
    if (argc != 2) {
        fprintf(stderr, "usage: %s PORT | %s rtu DEVICE BAUD PARITY UNIT\n", argv[0], argv[0]);
        return 2;
    }
    signal(SIGPIPE, SIG_IGN); /* a client that vanished must not kill the slave */

    modbus_t *ctx = modbus_new_tcp("127.0.0.1", atoi(argv[1]));
    modbus_mapping_t *map = modbus_mapping_new_start_address(0, 64, 0, 64, 0, 300, 0, 100);
    if (ctx == NULL || map == NULL) {
        fprintf(stderr, "slave: cannot allocate: %s\n", modbus_strerror(errno));
        return 1;
    }
    preload(map);

    int server = modbus_tcp_listen(ctx, 4);
    if (server == -1) {
        fprintf(stderr, "slave: cannot listen: %s\n", modbus_strerror(errno));
        return 1;
    }
    struct sockaddr_in addr;
    socklen_t addr_len = sizeof addr;
    if (getsockname(server, (struct sockaddr *)&addr, &addr_len) == -1) {
        perror("slave: getsockname");
        return 1;
    }
    printf("listening %d\n", ntohs(addr.sin_port));
    fflush(stdout);

    /* several clients at once (a gateway and, in tests, a second client that changes values
       under it, as a failing sensor would), served one request at a time with select() */
    fd_set clients;
    FD_ZERO(&clients);
    FD_SET(server, &clients);
    int highest = server;
    for (;;) {
        fd_set ready = clients;
        if (select(highest + 1, &ready, NULL, NULL, NULL) == -1)
            continue;
        for (int fd = 0; fd <= highest; fd++) {
            if (!FD_ISSET(fd, &ready))
                continue;
            if (fd == server) {
                struct sockaddr_in peer;
                socklen_t peer_len = sizeof peer;
                int client = accept(server, (struct sockaddr *)&peer, &peer_len);
                if (client != -1) {
                    FD_SET(client, &clients);
                    if (client > highest)
                        highest = client;
                }
                continue;
            }
            uint8_t query[MODBUS_TCP_MAX_ADU_LENGTH];
            modbus_set_socket(ctx, fd);
            int rc = modbus_receive(ctx, query);
            if (rc > 0) {
                modbus_reply(ctx, query, rc, map);
            } else if (rc == -1) {
                close(fd); /* the client closed, or sent something libmodbus rejects */
                FD_CLR(fd, &clients);
            }
        }
    }
}
