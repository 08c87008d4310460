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
 *   holding registers 0..199
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
 *   input registers 0..99   1000 + address, except
 *     50..51 float32 -0.5           big
 *     52..53 float32 3.14159274f    little
 * Addresses outside these ranges answer exception 2 (illegal data address).
 */
#include <arpa/inet.h>
#include <errno.h>
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

    uint16_t *ir = map->tab_input_registers;
    for (int a = 0; a < 100; a++)
        ir[a] = (uint16_t)(1000 + a);
    put32(ir + 50, float_bits(-0.5f), 0);
    put32(ir + 52, float_bits(3.14159274f), 1);
}

static int serve_rtu(const char *device, int baud, char parity, int unit)
{
    modbus_t *ctx = modbus_new_rtu(device, baud, parity, 8, 1);
    modbus_mapping_t *map = modbus_mapping_new_start_address(0, 64, 0, 64, 0, 200, 0, 100);
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
    modbus_mapping_t *map = modbus_mapping_new_start_address(0, 64, 0, 64, 0, 200, 0, 100);
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

    for (;;) {
        int client = modbus_tcp_accept(ctx, &server);
        if (client == -1)
            continue;
        for (;;) {
            uint8_t query[MODBUS_TCP_MAX_ADU_LENGTH];
            int rc = modbus_receive(ctx, query);
            if (rc > 0)
                modbus_reply(ctx, query, rc, map);
            else if (rc == -1)
                break; /* the client closed, or sent something libmodbus rejects */
        }
        close(client);
    }
}
