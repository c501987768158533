/*
 * Where an exception was raised, as a dictionary key, in C: the client's fast path for a 500.
 *
 *   place(cls, tb) -> bytes
 *       The identity of ``cls`` and, for each frame of the traceback ``tb`` (outermost first), its
 *       code object's identity and the instruction it was at, packed into one bytes object. Two
 *       exceptions get equal keys exactly when ``server_errors._place`` (the pure-Python twin, and
 *       the fallback when this module is not built) gives them equal tuples.
 *
 * Walking a 23-frame traceback this way takes ~0.3 µs instead of ~4 µs in Python: a 500 that
 * happened before is then described from the cache (``server_errors.describe_exception``).
 *
 *   known(exc, described) -> description | None
 *       The description ``described`` keeps for the place of ``exc`` (its ``last``) when ``exc`` is
 *       plainly the error last described there: not chained, no notes, not a syntax error, the
 *       same message (``str(exc)``); else None, and ``describe_exception`` goes the long way.
 *       The same answer as the first steps of ``describe_exception`` in Python, reading the
 *       exception's fields directly: its ``__dict__`` (where notes live) is not created to look
 *       for notes, nor are the getters of ``__cause__``/``__context__`` called.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <frameobject.h>
#include <stdint.h>
#include <string.h>

typedef struct {
    uintptr_t code;
    int64_t lasti;
} Frame;

static PyObject *place(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "place(cls, tb) takes 2 arguments");
        return NULL;
    }
    PyObject *tb = args[1] == Py_None ? NULL : args[1]; /* a traceback's last tb_next is NULL */
    if (tb != NULL && !PyTraceBack_Check(tb)) {
        PyErr_SetString(PyExc_TypeError, "place(cls, tb): tb must be a traceback or None");
        return NULL;
    }
    Py_ssize_t depth = 0;
    for (PyTracebackObject *t = (PyTracebackObject *)tb; t != NULL; t = t->tb_next) {
        depth++;
    }
    Py_ssize_t size = (Py_ssize_t)sizeof(uintptr_t) + depth * (Py_ssize_t)sizeof(Frame);
    PyObject *key = PyBytes_FromStringAndSize(NULL, size);
    if (key == NULL) {
        return NULL;
    }
    char *out = PyBytes_AS_STRING(key);
    uintptr_t cls = (uintptr_t)args[0];
    memcpy(out, &cls, sizeof cls);
    out += sizeof cls;
    for (PyTracebackObject *t = (PyTracebackObject *)tb; t != NULL; t = t->tb_next) {
        PyCodeObject *code = PyFrame_GetCode(t->tb_frame); /* a new reference */
        Frame frame = {(uintptr_t)code, (int64_t)t->tb_lasti};
        Py_DECREF(code); /* its identity is all that is kept; the caller keeps the code objects */
        memcpy(out, &frame, sizeof frame);
        out += sizeof frame;
    }
    return key;
}

static PyObject *str_notes, *str_message, *str_last; /* interned at import */

/* Whether ``exc`` is plainly itself: not chained, no notes, not a syntax error (-1: an error). */
static int plain(PyBaseExceptionObject *exc) {
    if ((exc->cause != NULL && exc->cause != Py_None) ||
        (exc->context != NULL && exc->context != Py_None && !exc->suppress_context)) {
        return 0;
    }
    if (exc->dict != NULL) {
        PyObject *notes = PyDict_GetItemWithError(exc->dict, str_notes); /* borrowed */
        if (notes == NULL && PyErr_Occurred()) {
            return -1;
        }
        int has_notes = notes == NULL ? 0 : PyObject_IsTrue(notes);
        if (has_notes != 0) {
            return has_notes < 0 ? -1 : 0;
        }
    }
    return !PyObject_TypeCheck((PyObject *)exc, (PyTypeObject *)PyExc_SyntaxError);
}

/* ``described[key].last`` if its message is ``message``; NULL (no error set) if not. */
static PyObject *last_with_message(PyObject *entry, PyObject *message) {
    PyObject *known_message = PyObject_GetAttr(entry, str_message);
    if (known_message == NULL) {
        return NULL;
    }
    int same = known_message == Py_None ? 0 : PyObject_RichCompareBool(known_message, message, Py_EQ);
    Py_DECREF(known_message);
    if (same <= 0) {
        return NULL;
    }
    PyObject *last = PyObject_GetAttr(entry, str_last);
    if (last == Py_None) {
        Py_DECREF(last);
        return NULL;
    }
    return last;
}

static PyObject *known(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 2 || !PyDict_Check(args[1])) {
        PyErr_SetString(PyExc_TypeError, "known(exc, described) takes an exception and a dict");
        return NULL;
    }
    if (!PyExceptionInstance_Check(args[0])) {
        Py_RETURN_NONE;
    }
    PyBaseExceptionObject *exc = (PyBaseExceptionObject *)args[0];
    int is_plain = plain(exc);
    if (is_plain <= 0) {
        return is_plain < 0 ? NULL : Py_NewRef(Py_None);
    }
    PyObject *place_args[2] = {(PyObject *)Py_TYPE(exc), exc->traceback == NULL ? Py_None : exc->traceback};
    PyObject *key = place(module, place_args, 2);
    if (key == NULL) {
        return NULL;
    }
    PyObject *entry = PyDict_GetItemWithError(args[1], key); /* borrowed */
    Py_DECREF(key);
    if (entry == NULL) {
        return PyErr_Occurred() ? NULL : Py_NewRef(Py_None);
    }
    Py_INCREF(entry); /* str() below runs Python code, which may change the dict */
    PyObject *message = PyObject_Str((PyObject *)exc);
    PyObject *last = NULL;
    if (message == NULL) {
        PyErr_Clear(); /* a __str__ that fails: described the long way, which says so */
    } else {
        last = last_with_message(entry, message);
        Py_DECREF(message);
    }
    Py_DECREF(entry);
    if (last == NULL) {
        return PyErr_Occurred() ? NULL : Py_NewRef(Py_None);
    }
    return last;
}

static PyMethodDef methods[] = {
    {"place", (PyCFunction)(void (*)(void))place, METH_FASTCALL,
     "place(cls, tb) -> bytes: where an exception was raised, as a dictionary key."},
    {"known", (PyCFunction)(void (*)(void))known, METH_FASTCALL,
     "known(exc, described) -> the description kept for exc's place, if exc is plainly the same error; else None."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef definition = {
    .m_base = PyModuleDef_HEAD_INIT,
    .m_name = "tallyhub.instrumentation._places",
    .m_size = 0,
    .m_methods = methods,
};

PyMODINIT_FUNC PyInit__places(void) {
    if ((str_notes = PyUnicode_InternFromString("__notes__")) == NULL ||
        (str_message = PyUnicode_InternFromString("message")) == NULL ||
        (str_last = PyUnicode_InternFromString("last")) == NULL) {
        return NULL;
    }
    return PyModule_Create(&definition);
}
