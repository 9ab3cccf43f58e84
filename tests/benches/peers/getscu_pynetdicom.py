"""C-GET a study with pynetdicom (the benchmark's Python peer): every instance written as a file.

usage: getscu_pynetdicom.py HOST PORT CALLED_AET STUDY_UID OUT_DIR

Proposes CT Image Storage in its original (explicit VR little endian) syntax with SCP role
selection, as DCMTK's getscu does for this data. Exits non-zero when the C-GET fails.
"""

import os
import sys

from pydicom.dataset import Dataset
from pynetdicom import AE, build_role, evt
from pynetdicom.sop_class import CTImageStorage, StudyRootQueryRetrieveInformationModelGet

host, port, called, study_uid, out_dir = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5]


def on_store(event):
    ds = event.dataset
    ds.file_meta = event.file_meta
    with open(os.path.join(out_dir, ds.SOPInstanceUID + ".dcm"), "wb") as f:
        f.write(b"\x00" * 128 + b"DICM")
        # Write the raw encoded dataset as received (no re-encoding), like getscu.
        from pydicom.filewriter import write_file_meta_info

        write_file_meta_info(f, event.file_meta)
        f.write(event.request.DataSet.getvalue())
    return 0x0000


ae = AE(ae_title="PYNETDICOM")
ae.add_requested_context(StudyRootQueryRetrieveInformationModelGet)
ae.add_requested_context(CTImageStorage)
role = build_role(CTImageStorage, scp_role=True)
assoc = ae.associate(host, port, ae_title=called, ext_neg=[role], evt_handlers=[(evt.EVT_C_STORE, on_store)])
if not assoc.is_established:
    sys.exit("association failed")
query = Dataset()
query.QueryRetrieveLevel = "STUDY"
query.StudyInstanceUID = study_uid
status = None
for status, _ in assoc.send_c_get(query, StudyRootQueryRetrieveInformationModelGet):
    pass
assoc.release()
if status is None or status.Status != 0x0000:
    sys.exit(f"C-GET ended with status {status.Status if status else None}")
