"""Pretrained weights are downloaded by one process per node while the others wait."""
import multiprocessing
import os
import socket
import time

import torch
import torch.distributed as dist

from mmseg_custom.models import weights


def rank_main(rank, port, hub_dir, out_dir):
    os.environ.update(MASTER_ADDR='127.0.0.1', MASTER_PORT=str(port), LOCAL_RANK=str(rank))
    dist.init_process_group('gloo', rank=rank, world_size=2)
    torch.hub.set_dir(hub_dir)

    def download(url, path, progress=True):
        open(os.path.join(out_dir, f'download_by_rank{rank}'), 'w').close()
        time.sleep(1.0)  # a slow download: the other rank must wait, not start its own
        torch.save({'mask_token': torch.full((1, 4), 7.0)}, path)  # official layout, tiny

    torch.hub.download_url_to_file = download
    state_dict = weights.load_dinov2_weights('small')  # what DINOv2.init_weights() calls
    with open(os.path.join(out_dir, f'rank{rank}'), 'w') as f:
        f.write(str(state_dict['mask_token'].sum().item()))
    dist.destroy_process_group()


def test_one_download_per_node(tmp_path):
    with socket.create_server(('', 0)) as s:
        port = s.getsockname()[1]
    ctx = multiprocessing.get_context('fork')
    procs = [ctx.Process(target=rank_main, args=(r, port, str(tmp_path / 'hub'), str(tmp_path)))
             for r in (1, 0)]  # rank 1 starts first
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    assert [p.exitcode for p in procs] == [0, 0]
    assert sorted(n for n in os.listdir(tmp_path) if n.startswith('download')) == [
        'download_by_rank0']
    assert (tmp_path / 'rank0').read_text() == (tmp_path / 'rank1').read_text() == '28.0'
