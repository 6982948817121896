/* fcgi_loop.c: the bare libfcgi accept loop, perfcgi's sync worker with nothing else: a bound for that class. */
#include "libfcgi_loop.h"
#include "response.h"

static void fcgi_loop_respond(FCGX_Request *request)
{
    FCGX_PutStr(BASELINE_RESPONSE, (int)BASELINE_RESPONSE_LEN, request->out);
}

int main(int argc, char **argv)
{
    return libfcgi_loop_main(argc, argv, "fcgi-loop", fcgi_loop_respond);
}
