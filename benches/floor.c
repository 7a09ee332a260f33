/* The floor for swap-to-signal latency: the least any reloader can do. One inotify watch on the
 * volume directory; when `..data` is moved in (the kubelet's commit), kill(PID, SIGHUP). No
 * hashing, no process lookup, no safety checks. nudge's benchmark measures against this.
 *
 *   floor DIR PID
 */
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <unistd.h>

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: floor DIR PID\n");
        return 2;
    }
    pid_t pid = (pid_t)atoi(argv[2]);
    int fd = inotify_init1(IN_CLOEXEC);
    if (fd < 0 || inotify_add_watch(fd, argv[1], IN_MOVED_TO | IN_CREATE) < 0) {
        perror("inotify");
        return 1;
    }
    fprintf(stderr, "watching\n");
    char buf[64 * (sizeof(struct inotify_event) + NAME_MAX + 1)]
        __attribute__((aligned(__alignof__(struct inotify_event))));
    for (;;) {
        ssize_t n = read(fd, buf, sizeof buf);
        if (n <= 0) return 1;
        for (char *p = buf; p < buf + n;) {
            struct inotify_event *ev = (struct inotify_event *)p;
            if (ev->len && strcmp(ev->name, "..data") == 0) kill(pid, SIGHUP);
            p += sizeof(struct inotify_event) + ev->len;
        }
    }
}
