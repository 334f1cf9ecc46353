/* A stand-in /init for testing images/ without nflet: prints a greeting, loads every module
 * listed in /etc/nflet/modules in order (as nflet's boot code will), reports the result and the
 * uptime, then powers off. Build: gcc -static -O2 -o init images/test/init.c */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/reboot.h>
#include <sys/syscall.h>
#include <unistd.h>

int main(void) {
    char line[512];
    int loaded = 0, failed = 0;
    printf("hello from init (pid %d)\n", getpid());
    mount("proc", "/proc", "proc", 0, NULL);
    mount("sysfs", "/sys", "sysfs", 0, NULL);
    FILE *list = fopen("/etc/nflet/modules", "r");
    if (!list) perror("open /etc/nflet/modules");
    while (list && fgets(line, sizeof line, list)) {
        line[strcspn(line, "\n")] = 0;
        int fd = open(line, O_RDONLY | O_CLOEXEC);
        if (fd < 0 || syscall(SYS_finit_module, fd, "", 0) != 0) {
            printf("insmod %s: FAILED: %s\n", line, strerror(errno));
            failed++;
        } else {
            loaded++;
        }
        if (fd >= 0) close(fd);
    }
    printf("modules: %d loaded, %d failed\n", loaded, failed);
    FILE *up = fopen("/proc/uptime", "r");
    if (up && fgets(line, sizeof line, up)) printf("uptime at end of init: %s", line);
    int cfg = access("/etc/nflet/nflet.toml", R_OK);
    printf("baked-in config: %s\n", cfg == 0 ? "present" : "absent");
    fflush(stdout);
    sync();
    reboot(RB_POWER_OFF);
    return 1;
}
