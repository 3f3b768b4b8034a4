// The constructor of package nsenter: see nsenter.go.
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

// errorFD is package sandbox's error pipe.
#define ERROR_FD 4

static pid_t child;

// fail reports msg (and errno's text) as a sandbox.StartError and exits.
static void fail(const char *msg, const char *arg) {
	char buf[512];
	int n = snprintf(buf, sizeof buf, "{\"code\":1,\"msg\":\"exec: %s %s: %s\"}", msg, arg, strerror(errno));
	if (n > 0) {
		ssize_t w = write(ERROR_FD, buf, (size_t)n < sizeof buf ? (size_t)n : sizeof buf - 1);
		(void)w; // nothing more to do if the parent is gone
	}
	_exit(1);
}

static void forward(int sig) {
	if (child > 0)
		kill(child, sig);
}

void strata_nsenter(void) {
	const char *pid = getenv("_STRATA_NSENTER_PID");
	const char *sync = getenv("_STRATA_NSENTER_SYNC");
	if (pid == NULL || sync == NULL)
		return;
	// The parent writes one byte once we are in the container's cgroup.
	int syncfd = atoi(sync);
	char c;
	ssize_t r;
	do {
		r = read(syncfd, &c, 1);
	} while (r < 0 && errno == EINTR);
	if (r != 1) {
		errno = EPIPE;
		fail("wait for the parent", "");
	}
	close(syncfd);

	// Open them all first: once in the mount namespace, /proc is the
	// container's, where PID means nothing.
	static const char *names[] = {"cgroup", "ipc", "uts", "net", "pid", "mnt"};
	int fds[6];
	for (int i = 0; i < 6; i++) {
		char path[64];
		snprintf(path, sizeof path, "/proc/%s/ns/%s", pid, names[i]);
		fds[i] = open(path, O_RDONLY | O_CLOEXEC);
		if (fds[i] < 0)
			fail("open", path);
	}
	for (int i = 0; i < 6; i++) {
		if (setns(fds[i], 0) < 0)
			fail("setns", names[i]);
		close(fds[i]);
	}
	unsetenv("_STRATA_NSENTER_PID");
	unsetenv("_STRATA_NSENTER_SYNC");

	child = fork();
	if (child < 0)
		fail("fork", "");
	if (child == 0)
		return; // Go starts here, in the container's pid namespace too

	// Only the child talks to the parent through the pipes: our copies
	// would keep them open after its execve.
	close(3);
	close(ERROR_FD);
	struct sigaction sa;
	memset(&sa, 0, sizeof sa);
	sa.sa_handler = forward;
	int sigs[] = {SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2};
	for (unsigned i = 0; i < sizeof sigs / sizeof sigs[0]; i++)
		sigaction(sigs[i], &sa, NULL);
	int status;
	while (waitpid(child, &status, 0) < 0) {
		if (errno != EINTR)
			_exit(1);
	}
	if (WIFSIGNALED(status))
		_exit(128 + WTERMSIG(status));
	_exit(WEXITSTATUS(status));
}
