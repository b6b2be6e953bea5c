/*
 * LD_PRELOAD shim for running Janus on loopback only (piazza-loadgen
 * compare, loadgen/janus-ci.sh).
 *
 * Janus's ICE code skips every interface flagged IFF_LOOPBACK when it
 * gathers host candidates, even with nat.ice_enforce_list = "127.0.0.1", and
 * then offers other interfaces' addresses, which a loopback-only test must
 * not use. This wrapper around getifaddrs() clears IFF_LOOPBACK on the list
 * it returns, so Janus gathers 127.0.0.1 (and, with ice_enforce_list, only
 * that). Nothing else changes.
 *
 * Build: cc -shared -fPIC -O2 -o loopback_shim.so loopback_shim.c -ldl
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <ifaddrs.h>
#include <net/if.h>
#include <stddef.h>

int getifaddrs(struct ifaddrs **ifap) {
    static int (*real)(struct ifaddrs **) = NULL;
    if (real == NULL) {
        real = (int (*)(struct ifaddrs **))dlsym(RTLD_NEXT, "getifaddrs");
        if (real == NULL) {
            return -1;
        }
    }
    int rc = real(ifap);
    if (rc != 0 || ifap == NULL) {
        return rc;
    }
    for (struct ifaddrs *i = *ifap; i != NULL; i = i->ifa_next) {
        i->ifa_flags &= ~(unsigned int)IFF_LOOPBACK;
    }
    return rc;
}
