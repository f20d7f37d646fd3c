/*
 * dspex_jobs.protocol._table_c: the two passes over a table's rows, compiled.
 *
 * Sending a table by columns (dspex_jobs/protocol/_table.py) takes one pass over the rows
 * to split them into columns and, on the reader, one pass to build a dict per row again.
 * In Python both are already at the interpreter's floor (itemgetter over the rows, a
 * compiled dict display per row) and were over a third of what `auto` spends on the
 * benchmark's 10,000-row table; here each is a plain loop over the C API.
 *
 * Optional: setup.py builds it when a C compiler is present, and _table.py falls back to
 * its pure-Python passes, which return exactly the same values, when it is missing.
 *
 * Both functions run no Python code of anyone else's while they hold raw pointers: keys
 * must be exact `str` (their hashing and comparison are C), the rows are read through a
 * tuple copy of the list, and each column's length is checked at every read.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

/* The keys among a function's two arguments (`args[at]`), borrowed: a tuple of one or more
 * exact `str`. NULL with an error set if there are not two arguments or the keys are not so. */
static PyObject *
keys_argument(const char *function, PyObject *const *args, Py_ssize_t nargs, Py_ssize_t at)
{
    if (nargs != 2) {
        PyErr_Format(PyExc_TypeError, "%s() takes 2 arguments (%zd given)", function, nargs);
        return NULL;
    }
    PyObject *keys = args[at];
    if (!PyTuple_CheckExact(keys)) {
        PyErr_Format(PyExc_TypeError, "%s(): keys must be a tuple", function);
        return NULL;
    }
    if (PyTuple_GET_SIZE(keys) == 0) {
        PyErr_Format(PyExc_ValueError, "%s(): a table needs at least one key", function);
        return NULL;
    }
    for (Py_ssize_t j = 0; j < PyTuple_GET_SIZE(keys); j++) {
        if (!PyUnicode_CheckExact(PyTuple_GET_ITEM(keys, j))) {
            PyErr_Format(PyExc_TypeError, "%s(): key %zd is a %.100s, not a str", function, j,
                         Py_TYPE(PyTuple_GET_ITEM(keys, j))->tp_name);
            return NULL;
        }
    }
    return keys;
}

/* Record `value`'s type as column j's (row i), or that the column's types differ (NULL).
 * Each recorded type is a reference of ours: a key's __eq__, run by a lookup, could assign
 * a recorded value's __class__ and let its old class go. */
#define NOTE_TYPE(types, i, j, value)                                                    \
    do {                                                                                 \
        if ((i) == 0) {                                                                  \
            (types)[j] = (PyObject *)Py_TYPE(value);                                     \
            Py_INCREF((types)[j]);                                                       \
        }                                                                                \
        else if ((types)[j] != (PyObject *)Py_TYPE(value)) {                             \
            Py_CLEAR((types)[j]);                                                        \
        }                                                                                \
    } while (0)

static void
free_types(PyObject **types, Py_ssize_t count)
{
    if (types != NULL) {
        for (Py_ssize_t j = 0; j < count; j++) {
            Py_XDECREF(types[j]);
        }
        PyMem_Free(types);
    }
}

PyDoc_STRVAR(columns_doc,
"columns(rows, keys, /)\n--\n\n"
"(columns, types): one list per key, holding that key's value in every row, and per column\n"
"the exact type of all its values (None if they differ). None if a row is not an exact dict\n"
"holding exactly these keys.");

static PyObject *
columns(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    PyObject *keys = keys_argument("columns", args, nargs, 1);
    if (keys == NULL) {
        return NULL;
    }
    /* A copy: a key lookup can compare against a row's other keys, whose __eq__ might
     * change the list under us; a tuple cannot change. */
    PyObject *rows = PySequence_Tuple(args[0]);
    if (rows == NULL) {
        return NULL;
    }
    Py_ssize_t count = PyTuple_GET_SIZE(keys), length = PyTuple_GET_SIZE(rows);
    PyObject *out = PyList_New(count);
    /* Each column's one exact type so far, NULL once two differ: a compare per value while
     * the value is at hand, which spares the encoder a pass over each column to learn it. */
    PyObject **types = PyMem_Calloc(count, sizeof(PyObject *));
    if (out == NULL || types == NULL) {
        if (out != NULL) {
            PyErr_NoMemory();
        }
        goto fail;
    }
    for (Py_ssize_t j = 0; j < count; j++) {
        PyObject *column = PyList_New(length);  /* slots NULL until filled, as lists allow */
        if (column == NULL) {
            goto fail;
        }
        PyList_SET_ITEM(out, j, column);
    }
    for (Py_ssize_t i = 0; i < length; i++) {
        PyObject *row = PyTuple_GET_ITEM(rows, i);
        if (!PyDict_CheckExact(row) || PyDict_GET_SIZE(row) != count) {
            goto not_a_table;
        }
        /* The usual row holds the very key objects of `keys`, in their order (rows built by
         * one dict display, one json.loads, one decode): read its entries in order while
         * they do, which takes no hashing and no probing, then look up the rest. */
        Py_ssize_t j = 0, position = 0;
        PyObject *key, *value;
        while (j < count && PyDict_Next(row, &position, &key, &value)
               && key == PyTuple_GET_ITEM(keys, j)) {
            Py_INCREF(value);
            PyList_SET_ITEM(PyList_GET_ITEM(out, j), i, value);
            NOTE_TYPE(types, i, j, value);
            j++;
        }
        if (j == count) {
            continue;
        }
        Py_INCREF(row);  /* held while a key's __eq__ could run */
        for (; j < count; j++) {
            value = PyDict_GetItemWithError(row, PyTuple_GET_ITEM(keys, j));
            if (value == NULL) {
                Py_DECREF(row);
                if (PyErr_Occurred()) {
                    goto fail;
                }
                goto not_a_table;
            }
            PyObject *column = PyList_GET_ITEM(out, j);
            Py_INCREF(value);
            PyList_SET_ITEM(column, i, value);
            NOTE_TYPE(types, i, j, value);
        }
        Py_DECREF(row);
    }
    Py_DECREF(rows);
    PyObject *kinds = PyList_New(count);
    if (kinds == NULL) {
        free_types(types, count);
        Py_DECREF(out);
        return NULL;
    }
    for (Py_ssize_t j = 0; j < count; j++) {  /* our references pass to the list */
        if (types[j] == NULL) {
            Py_INCREF(Py_None);
            types[j] = Py_None;
        }
        PyList_SET_ITEM(kinds, j, types[j]);
    }
    PyMem_Free(types);
    return Py_BuildValue("(NN)", out, kinds);

not_a_table:
    free_types(types, count);
    Py_DECREF(rows);
    Py_DECREF(out);
    Py_RETURN_NONE;
fail:
    free_types(types, count);
    Py_DECREF(rows);
    Py_XDECREF(out);
    return NULL;
}

PyDoc_STRVAR(rows_doc,
"rows(keys, columns, /)\n--\n\n"
"A dict per position of the columns: {keys[0]: columns[0][i], keys[1]: columns[1][i], ...}.\n"
"The columns must be as many lists as keys, all of one length; the keys distinct str.");

static PyObject *
rows(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    PyObject *keys = keys_argument("rows", args, nargs, 0);
    if (keys == NULL) {
        return NULL;
    }
    PyObject *columns = args[1];
    if (!PyList_CheckExact(columns)) {
        PyErr_SetString(PyExc_TypeError, "rows(): columns must be a list of lists");
        return NULL;
    }
    Py_ssize_t count = PyTuple_GET_SIZE(keys);
    if (PyList_GET_SIZE(columns) != count) {
        PyErr_Format(PyExc_ValueError, "%zd keys but %zd columns", count,
                     PyList_GET_SIZE(columns));
        return NULL;
    }
    /* A tuple of the columns, so that the list holding them cannot change while we read. */
    PyObject *held = PyList_AsTuple(columns);
    if (held == NULL) {
        return NULL;
    }
    Py_ssize_t length = -1;
    for (Py_ssize_t j = 0; j < count; j++) {
        PyObject *column = PyTuple_GET_ITEM(held, j);
        if (!PyList_CheckExact(column)
            || (length >= 0 && PyList_GET_SIZE(column) != length)) {
            Py_DECREF(held);
            PyErr_SetString(PyExc_ValueError, "the columns must be lists of one length");
            return NULL;
        }
        length = PyList_GET_SIZE(column);
    }
    PyObject *out = PyList_New(length);
    if (out == NULL) {
        Py_DECREF(held);
        return NULL;
    }
    for (Py_ssize_t i = 0; i < length; i++) {
        PyObject *row = PyDict_New();
        if (row == NULL) {
            goto fail;
        }
        PyList_SET_ITEM(out, i, row);
        for (Py_ssize_t j = 0; j < count; j++) {
            PyObject *column = PyTuple_GET_ITEM(held, j);
            /* Allocating a dict can run the garbage collector, and with it a finalizer
             * that might shorten a column: read only what is there. */
            if (i >= PyList_GET_SIZE(column)) {
                PyErr_SetString(PyExc_RuntimeError, "a column changed size while rows were built");
                goto fail;
            }
            if (PyDict_SetItem(row, PyTuple_GET_ITEM(keys, j), PyList_GET_ITEM(column, i)) < 0) {
                goto fail;
            }
        }
    }
    Py_DECREF(held);
    return out;

fail:
    Py_DECREF(held);
    Py_DECREF(out);
    return NULL;
}

static PyMethodDef table_c_methods[] = {
    {"columns", (PyCFunction)(void (*)(void))columns, METH_FASTCALL, columns_doc},
    {"rows", (PyCFunction)(void (*)(void))rows, METH_FASTCALL, rows_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef table_c_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "dspex_jobs.protocol._table_c",
    .m_doc = "The two passes over a table's rows (see dspex_jobs/protocol/_table.py), compiled.",
    .m_size = 0,
    .m_methods = table_c_methods,
};

PyMODINIT_FUNC
PyInit__table_c(void)
{
    return PyModuleDef_Init(&table_c_module);
}
