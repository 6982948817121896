/* accept_backlog: the connections an event worker takes without yielding after a pause. */
#include "worker/accept_backlog.h"

void accept_backlog_seen(struct accept_backlog *b, int i, int queued)
{
    b->left[i] = queued > 0 ? queued : 0;
}

int accept_backlog_owed(const struct accept_backlog *b, int i)
{
    return b->left[i] > 0;
}

void accept_backlog_after(struct accept_backlog *b, int i, enum accept_outcome r)
{
    switch (r) {
    case ACCEPT_TOOK:
    case ACCEPT_FAILED: /* counted all the same: the owing ends whatever fails */
        if (b->left[i] > 0) b->left[i]--;
        break;
    case ACCEPT_NONE: /* every connection seen at the pause has been taken */
    case ACCEPT_FULL: /* no more for now; once one closes, the next is chosen for again */
        b->left[i] = 0;
        break;
    }
}
